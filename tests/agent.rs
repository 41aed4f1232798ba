//! Agent forwarding (`ssh -A`) with the real OpenSSH client and a real `ssh-agent`, on
//! the local backend and on the Kubernetes one: `ssh-add -l` inside lists the laptop's
//! key, a signature made inside verifies outside, the socket sits in a private
//! directory that goes with the session, many clients at once all get answers, and one
//! that never reads its answers stalls nobody else. Without `-A`, with `[ssh]
//! agent_forwarding = false`, or where the helper cannot run, there is no
//! `SSH_AUTH_SOCK` and the session still runs.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::agent::Agent;
use support::kube::{KubeGateway, sandbox};
use support::{Gateway, StaticConfig, process::wait_until, run, stderr, stdout};

/// How a test reaches one sandbox: a fresh `ssh` with the key that may, and the
/// destination.
struct Sandbox<'a> {
    ssh: Box<dyn Fn() -> Command + 'a>,
    dest: &'static str,
}

impl Sandbox<'_> {
    /// Runs `command` in the sandbox, forwarding `agent` if given.
    fn run(&self, agent: Option<&Agent>, command: &str) -> Output {
        let mut cmd = (self.ssh)();
        if let Some(agent) = agent {
            cmd = agent.forwarding(&cmd);
        }
        cmd.arg(self.dest).arg(command);
        run(cmd)
    }
}

const UNSET: &str = "echo \"[${SSH_AUTH_SOCK-unset}]\"";

fn forwards_the_agent(sandbox: &Sandbox, log: &dyn Fn() -> String) {
    let agent = Agent::start();
    let ok = |out: &Output| {
        assert!(
            out.status.success(),
            "{:?}\nstdout: {}\nstderr: {}\n{}",
            out.status,
            stdout(out),
            stderr(out),
            log()
        );
    };

    let out = sandbox.run(Some(&agent), "ssh-add -l");
    ok(&out);
    assert!(
        stdout(&out).contains(&agent.fingerprint),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "", "no note when forwarding works");

    // Where the socket is: a 0700 directory of its own, gone with the session.
    let out = sandbox.run(
        Some(&agent),
        "echo \"$SSH_AUTH_SOCK\"; ls -ld \"$(dirname \"$SSH_AUTH_SOCK\")\"; ls -l \"$SSH_AUTH_SOCK\"; ssh-add -L",
    );
    ok(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let socket = Path::new(lines[0]);
    assert!(socket.is_absolute(), "{text}");
    assert!(lines[1].starts_with("drwx------ "), "{text}");
    assert!(lines[2].starts_with("srw------- "), "{text}");
    assert!(lines[3].starts_with(&agent.public_words()), "{text}");
    let dir = socket.parent().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || !dir.exists()),
        "{} outlived its session",
        dir.display()
    );

    // A real sign request crosses the forward: the signature made inside verifies here.
    let message = "signed inside the sandbox";
    let out = sandbox.run(
        Some(&agent),
        &format!(
            "d=$(mktemp -d) && cd \"$d\" && printf '%s\\n' '{key}' > key.pub && printf '{message}' > msg \
             && ssh-keygen -q -Y sign -f key.pub -n test msg >/dev/null && cat msg.sig; rm -rf \"$d\"",
            key = agent.key.public_line,
        ),
    );
    ok(&out);
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("msg.sig"), &out.stdout).unwrap();
    std::fs::write(
        local.path().join("allowed"),
        format!("tester {}\n", agent.key.public_line),
    )
    .unwrap();
    let verify = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '{message}' | ssh-keygen -Y verify -f allowed -I tester -n test -s msg.sig"
        ))
        .current_dir(local.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "signature does not verify: {}{}",
        stdout(&verify),
        stderr(&verify)
    );

    // Without -A there is nothing.
    let out = sandbox.run(None, UNSET);
    assert_eq!(stdout(&out), "[unset]\n", "{}", stderr(&out));

    // Eight clients at once, each on its own agent channel.
    let out = sandbox.run(
        Some(&agent),
        "d=$(mktemp -d); for i in 1 2 3 4 5 6 7 8; do ssh-add -l > \"$d/$i\" 2>&1 & done; wait; cat \"$d\"/*; rm -rf \"$d\"",
    );
    ok(&out);
    let listed = stdout(&out);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains(&agent.fingerprint))
            .count(),
        8,
        "{listed}"
    );

    // Clients that send requests and never read the answers: one paced (the answers
    // pile up in the workload until the helper cuts it off), one flooding (its
    // requests pile up at the gateway, waiting for the client's window, until the
    // gateway cuts it off). Both are cut off, and another client in the same session
    // is answered meanwhile.
    let staller = "import os, socket, sys, time\n\
                   s = socket.socket(socket.AF_UNIX)\n\
                   s.connect(os.environ['SSH_AUTH_SOCK'])\n\
                   n = int(sys.argv[1])\n\
                   try:\n    while True:\n        s.sendall(b'\\0\\0\\0\\x01\\x0b' * n)\n        time.sleep(0.005)\n\
                   except OSError:\n    print('cut off')\n";
    let out = sandbox.run(
        Some(&agent),
        &format!(
            "d=$(mktemp -d); cat > \"$d/stall.py\" <<'EOF'\n{staller}EOF\n\
             timeout 30 python3 \"$d/stall.py\" 1000 > \"$d/paced\" 2>&1 & \
             timeout 30 python3 \"$d/stall.py\" 200000 > \"$d/flood\" 2>&1 & \
             sleep 1; timeout 20 ssh-add -l; s=$?; wait; cat \"$d/paced\" \"$d/flood\"; rm -rf \"$d\"; exit $s"
        ),
    );
    ok(&out);
    let said = stdout(&out);
    assert!(said.contains(&agent.fingerprint), "{said}");
    assert_eq!(said.matches("cut off").count(), 2, "{said}");
}

#[test]
fn the_agent_is_forwarded_on_the_local_backend() {
    let gw = Gateway::start();
    let sandbox = Sandbox {
        ssh: Box::new(|| gw.ssh(&gw.dev_key)),
        dest: "demo@127.0.0.1",
    };
    forwards_the_agent(&sandbox, &|| gw.log());
    // Every agent channel was registered with the connection like any channel.
    assert!(gw.log().contains("kind=\"auth-agent\""), "{}", gw.log());
}

#[test]
fn the_agent_is_forwarded_on_the_kubernetes_backend() {
    let gw = KubeGateway::start(&["default"], None);
    let (labels, annotations) = sandbox("alpha", "alice");
    gw.emu.pod("default", "sandbox-alpha", labels, annotations);
    let sandbox = Sandbox {
        ssh: Box::new(|| gw.ssh(&gw.alice)),
        dest: "alpha@127.0.0.1",
    };
    forwards_the_agent(&sandbox, &|| gw.log());
}

#[test]
fn agent_forwarding_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = StaticConfig::write(dir.path(), "agent_forwarding = false\n", "");
    let keys = config.users_with_keys(&["alice"]);
    config.admin(&["sandbox", "add", "demo", "--owner", "alice"]);
    let _server = config.serve_with_env(&[("RUST_LOG", "info,ssh_gateway=debug")]);
    let agent = Agent::start();
    let port = config.ssh_port;
    let sandbox = Sandbox {
        ssh: Box::new(|| support::client("ssh", &keys[0], port)),
        dest: "demo@127.0.0.1",
    };
    let out = sandbox.run(Some(&agent), &format!("{UNSET}; echo ran"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[unset]\nran\n");
    // OpenSSH asks without wanting a reply, so the client says nothing; the log does.
    assert_eq!(stderr(&out), "");
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(
        log.contains("agent forwarding refused: turned off by [ssh] agent_forwarding"),
        "{log}"
    );
}
