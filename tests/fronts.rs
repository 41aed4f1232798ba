//! The HTTP CONNECT and TLS fronts: real OpenSSH through `ssh-gateway proxy`,
//! `proxytunnel` (plain, and with TLS to the TLS front carrying the CONNECT) and
//! `openssl s_client` as ProxyCommand, routed by host name whatever the SSH user name;
//! bad, oversized and stalled preludes refused within the login deadline, inside TLS
//! too; a user name that contradicts the host name refused with a message.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    KeyPair, Serve, admin_with_config, free_port, run, run_with_input, static_gateway_toml, stderr,
    stdout, users_with_keys,
};

const DOMAIN: &str = "ssh.test.example";

struct Front {
    dir: tempfile::TempDir,
    connect_port: u16,
    tls_port: u16,
    alice: KeyPair,
    _server: Serve,
}

fn start() -> Front {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (ssh_port, api_port, connect_port, tls_port) =
        (free_port(), free_port(), free_port(), free_port());
    self_signed(dir.path(), "first");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        static_gateway_toml(
            dir.path(),
            ssh_port,
            api_port,
            "login_grace_secs = 3\n",
            &format!(
                "[routing]\ndomain = \"{DOMAIN}\"\n\
                 [fronts.connect]\nlisten = \"127.0.0.1:{connect_port}\"\n\
                 [fronts.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n"
            ),
        ),
    )
    .unwrap();
    let alice = users_with_keys(
        &config,
        &format!("sqlite://{d}/gw.db"),
        dir.path(),
        &["alice"],
    )
    .remove(0);
    for id in ["demo", "other", "training-job-abc-1"] {
        admin_with_config(&config, &["sandbox", "add", id, "--owner", "alice"]);
    }
    let server = Serve::start(&config, &dir.path().join("gateway.log"), api_port);
    Front {
        dir,
        connect_port,
        tls_port,
        alice,
        _server: server,
    }
}

/// A self-signed certificate for `*.{DOMAIN}` in `dir/cert.pem`, `dir/key.pem`.
fn self_signed(dir: &Path, cn: &str) {
    // Written beside, then renamed: the gateway may reload between the two files.
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "key.new",
            "-out",
            "cert.new",
            "-subj",
        ])
        .arg(format!("/CN={cn}.{DOMAIN}"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(dir.join("key.new"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.new"), dir.join("cert.pem")).unwrap();
}

/// The subject of the certificate the TLS front serves now.
fn served_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername demo.{DOMAIN} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Front {
    fn ssh_via(&self, proxy_command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(support::Gateway::client_opts_for(&self.alice.private))
            .args(["-o", &format!("ProxyCommand={proxy_command}")]);
        cmd
    }

    fn proxy(&self) -> String {
        format!(
            "{} proxy --connect 127.0.0.1:{} %h %p",
            support::BIN,
            self.connect_port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    fn sandbox(&self, id: &str) -> std::path::PathBuf {
        self.dir.path().join("sandboxes").join(id)
    }
}

#[test]
fn host_names_route_through_ssh_gateway_proxy_whatever_the_user_name() {
    let f = start();
    // VS Code puts the local user's name in the user name: it does not matter.
    let mut ssh = f.ssh_via(&f.proxy());
    ssh.args([&format!("someone@demo.{DOMAIN}"), "pwd"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), f.log());
    assert_eq!(
        Path::new(stdout(&out).trim()).canonicalize().unwrap(),
        f.sandbox("demo").canonicalize().unwrap()
    );
    // Upper case is the same host; a job node routes as a job name.
    let mut ssh = f.ssh_via(&f.proxy());
    ssh.args([&format!("x@OTHER.{DOMAIN}"), "pwd"]);
    let out = run(ssh);
    assert!(stdout(&out).trim().ends_with("/other"), "{}", stderr(&out));

    // scp too, through the same ProxyCommand.
    let local = f.dir.path().join("up.txt");
    std::fs::write(&local, "through CONNECT\n").unwrap();
    let mut scp = Command::new("scp");
    scp.args(support::Gateway::client_opts_for(&f.alice.private))
        .args(["-o", &format!("ProxyCommand={}", f.proxy())])
        .arg(&local)
        .arg(format!("me@demo.{DOMAIN}:up.txt"));
    let out = run(scp);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(f.sandbox("demo").join("up.txt")).unwrap(),
        "through CONNECT\n"
    );

    // The bare domain: the user name routes, as without a front.
    let mut ssh = f.ssh_via(&f.proxy());
    ssh.args([&format!("other@{DOMAIN}"), "pwd"]);
    assert!(stdout(&run(ssh)).trim().ends_with("/other"));
}

#[test]
fn the_tls_front_routes_by_sni_and_reloads_its_certificate() {
    let f = start();
    let via_tls = format!(
        "openssl s_client -quiet -verify_quiet -connect 127.0.0.1:{} -servername %h",
        f.tls_port
    );
    let mut ssh = f.ssh_via(&via_tls);
    ssh.args([&format!("laptop@other.{DOMAIN}"), "echo over tls; pwd"]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), f.log());
    assert!(stdout(&out).starts_with("over tls\n"));
    assert!(stdout(&out).trim().ends_with("/other"));

    // A host name the SNI carries that does not route: told what is wrong.
    let mut ssh = f.ssh_via(&via_tls);
    ssh.args(["u@demo.elsewhere.org", "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not under this gateway's domain"),
        "{}",
        stderr(&out)
    );

    // New files on disk are served without a restart.
    assert!(served_subject(f.tls_port).contains("first"));
    self_signed(f.dir.path(), "second");
    assert!(
        support::process::wait_until(Duration::from_secs(15), || served_subject(f.tls_port)
            .contains("second")),
        "{}",
        f.log()
    );
}

#[test]
fn proxytunnel_reaches_the_host_it_names() {
    let f = start();
    let mut ssh = f.ssh_via(&format!(
        "proxytunnel -q -p 127.0.0.1:{} -d %h:%p",
        f.connect_port
    ));
    ssh.args([
        &format!("laptop-user@demo.{DOMAIN}"),
        "echo via proxytunnel; pwd",
    ]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), f.log());
    assert!(stdout(&out).starts_with("via proxytunnel\n"));
    assert!(stdout(&out).trim().ends_with("/demo"));
}

#[test]
fn connect_inside_the_tls_front_routes_by_its_host_not_the_sni() {
    let f = start();
    // proxytunnel -E: TLS to the front, then CONNECT inside it (its SNI is no target).
    let mut ssh = f.ssh_via(&format!(
        "proxytunnel -q -E -z -p 127.0.0.1:{} -d %h:%p",
        f.tls_port
    ));
    ssh.args([
        &format!("laptop-user@demo.{DOMAIN}"),
        "echo via tls connect; pwd",
    ]);
    let out = run(ssh);
    assert!(out.status.success(), "{}\n{}", stderr(&out), f.log());
    assert!(stdout(&out).starts_with("via tls connect\n"));
    assert!(stdout(&out).trim().ends_with("/demo"));

    // scp through the same tunnel: the SSH stream after the 200 is intact.
    let local = f.dir.path().join("tls-up.txt");
    std::fs::write(&local, "through CONNECT in TLS\n").unwrap();
    let mut scp = Command::new("scp");
    scp.args(support::Gateway::client_opts_for(&f.alice.private))
        .args([
            "-o",
            &format!(
                "ProxyCommand=proxytunnel -q -E -z -p 127.0.0.1:{} -d %h:%p",
                f.tls_port
            ),
        ])
        .arg(&local)
        .arg(format!("me@other.{DOMAIN}:tls-up.txt"));
    let out = run(scp);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(f.sandbox("other").join("tls-up.txt")).unwrap(),
        "through CONNECT in TLS\n"
    );

    // A bad prelude inside TLS gets its 400 (inside TLS) and a closed stream.
    let s_client = || {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-verify_quiet", "-connect"])
            .arg(format!("127.0.0.1:{}", f.tls_port))
            .args(["-servername", &format!("gw.{DOMAIN}")]);
        cmd
    };
    for (request, part) in [
        (
            &b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"[..],
            "expected CONNECT",
        ),
        (
            b"CONNECT demo.elsewhere.org:22 HTTP/1.1\r\n\r\n",
            "not under this gateway's domain",
        ),
    ] {
        let out = run_with_input(s_client(), request);
        let answer = stdout(&out);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{answer}{}",
            stderr(&out)
        );
        assert!(answer.contains(part), "{answer}");
    }
}

#[test]
fn wrong_host_names_are_refused_with_what_is_wrong() {
    let f = start();
    for (host, part) in [
        ("demo.elsewhere.org", "not under this gateway's domain"),
        (&format!("a.b.{DOMAIN}")[..], "exactly one label"),
        (&format!("_x.{DOMAIN}")[..], "first label"),
        (
            &format!("model-m_1-d1.{DOMAIN}")[..],
            "invalid model id \"m_1\"",
        ),
    ] {
        let mut ssh = f.ssh_via(&f.proxy());
        ssh.args([&format!("u@{host}"), "true"]);
        let out = run(ssh);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(part), "{host}: {}", stderr(&out));
    }
    // A user name that is itself a job node, for another target than the host name.
    let mut ssh = f.ssh_via(&f.proxy());
    ssh.args([&format!("training-job-abc-1@demo.{DOMAIN}"), "true"]);
    let out = run(ssh);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("names another target than the host name"),
        "{}",
        stderr(&out)
    );
}

fn raw(port: u16, send: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(send);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn bad_oversized_and_stalled_preludes_get_an_answer_and_a_closed_socket() {
    let f = start();
    let (answer, _) = raw(f.connect_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("expected CONNECT"), "{answer}");

    let mut huge = b"CONNECT demo.ssh.test.example:22 HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'h', 20_000));
    let (answer, _) = raw(f.connect_port, &huge);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // Half a prelude, then silence: closed at the login deadline (3 s), answerless.
    let (answer, took) = raw(f.connect_port, b"CONNECT demo.ssh.test.example:22 HTT");
    assert_eq!(answer, "");
    assert!(took >= Duration::from_secs(2), "{took:?}");

    // The TLS front: a client that never starts its handshake is closed at the
    // deadline; one that sends something else than TLS, at once.
    let (answer, took) = raw(f.tls_port, b"");
    assert_eq!(answer, "");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let (_, took) = raw(f.tls_port, b"SSH-2.0-OpenSSH_9.2\r\n");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A tunnel is granted, but SSH never starts: the same deadline closes it.
    let (answer, _) = raw(
        f.connect_port,
        b"CONNECT demo.ssh.test.example:22 HTTP/1.1\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}
