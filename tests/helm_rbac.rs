//! The chart's RBAC is exactly sufficient (issue 11). The chart is rendered by real
//! Helm (release `gw` in namespace `gw`, watching namespace `default`); its Role and
//! RoleBinding are loaded into the kube-emulator, which authorizes the chart's
//! ServiceAccount's token the way kube-apiserver's RBAC authorizer does
//! (kube-emulator/src/rbac.rs). The gateway is the real binary running the chart's own
//! gateway.toml (its ConfigMap) after `ssh-gateway migrate`, as the chart's hook Job
//! runs it, with environment overrides only for what differs on this machine: the
//! database, the listen addresses, the host key directory and the kubeconfig, whose
//! user is the ServiceAccount's token.
//!
//! Sufficient: under exactly the chart's rules, real OpenSSH clients get a PTY shell,
//! exec, SFTP, `ssh -L` and `ssh -W`, wake-on-connect of a StatefulSet at 0 replicas
//! and idle pause back to 0, activity annotations on the set, access edits on a pod
//! and on a StatefulSet ending a live session, a pod deleted mid-session explained,
//! and a pod whose StatefulSet lacks the target label (read by name).
//!
//! Necessary: for each verb the rendered Role grants on each resource, a policy with
//! that verb alone taken off (the rendered Role mutated) makes the operation that needs
//! it fail: the gateway's log says forbidden, and the user reads a clean message (no
//! Kubernetes detail, no hang), or, for what runs in the background, the log says what
//! did not happen: activity annotations are not written; the access watch cannot be
//! opened, so access edits reach live sessions only when its retries re-list (backoff
//! up to 30 s) instead of at once; a pod deleted under a session ends it unexplained.
//! A verb the Role grants that has no case here fails the test, so the two lists stay
//! one. No verb is skipped: `get` on pods/exec and pods/portforward looks like one only
//! older API servers need, but it is the other way round. The gateway's WebSocket
//! upgrade is a GET, authorized as `get` by every API server; from Kubernetes 1.35 the
//! pod registry also requires `create` on it (AuthorizePodWebsocketUpgradeCreatePermission,
//! on by default), which before 1.35 only SPDY's POST needed. So on 1.35 and later
//! both verbs are needed, and the emulator enforces both.
//!
//! Not here: `kubectl apply --dry-run=server` of the rendered objects. The chart
//! renders a Deployment, Services, ConfigMaps, Secrets, a Job, a PodDisruptionBudget
//! and RBAC objects, none of which the emulator serves (it serves Pods and
//! StatefulSets); tests/helm.rs validates every object against the Kubernetes OpenAPI
//! schema instead.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use kube_emulator::{Kind, Rbac, ServiceAccount};
use serde_json::{Value, json};
use support::helm::render;
use support::kube::{EmulatorThread, sandbox};
use support::live::live;
use support::process::wait_until;
use support::{BIN, KeyPair, Serve, free_port, keygen, register_key, run, run_with_input};
use support::{stderr, stdout};

const RELEASE: &str = "gw";
/// Where the chart is installed, and so its ServiceAccount's namespace.
const NAMESPACE: &str = "gw";
/// The one namespace the gateway watches, where the chart's Role is.
const WATCHED: &str = "default";
const SERVICE_ACCOUNT: &str = "gw-ssh-gateway";
const SA_TOKEN: &str = "token-of-gw-ssh-gateway";
const USER: &str = "User \"system:serviceaccount:gw:gw-ssh-gateway\"";
const MEMBERS: &str = "ssh-gateway.io/members";
/// What a user reads when the cluster refuses the gateway itself: not "try again",
/// and not about their own access.
const DENIED: &str = "the gateway is not permitted to do this in its cluster; its operator must grant it (the gateway's log says what is missing)";

/// The chart installed into an emulated cluster, with users alice and bob and their
/// sandboxes in `default`; gateways are started from it (`serve`).
struct Deployment {
    dir: tempfile::TempDir,
    emu: EmulatorThread,
    /// Every object the chart rendered.
    objects: Vec<Value>,
    alice: KeyPair,
    bob: KeyPair,
    starts: std::cell::Cell<u32>,
}

/// One `ssh-gateway serve` of the deployment.
struct Gateway {
    ssh_port: u16,
    log: PathBuf,
    _serve: Serve,
}

/// The (resource, verb) pairs a Role's rules grant, in order.
fn grants(role: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                out.push((
                    resource.as_str().unwrap().to_owned(),
                    verb.as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

/// `role` with `verb` taken off `resource` only: each rule is split into one rule
/// per resource, so the other resources of the rule keep the verb.
fn without(role_before: &Value, resource: &str, verb: &str) -> Value {
    let role = role_before;
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for res in rule["resources"].as_array().unwrap() {
            let verbs: Vec<&Value> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| !(res == resource && *v == verb))
                .collect();
            if !verbs.is_empty() {
                rules.push(
                    json!({"apiGroups": rule["apiGroups"], "resources": [res], "verbs": verbs}),
                );
            }
        }
    }
    let mut role = role.clone();
    role["rules"] = json!(rules);
    let mut expected = grants(&role);
    expected.push((resource.to_owned(), verb.to_owned()));
    expected.sort();
    let mut granted = grants(role_before);
    granted.sort();
    assert_eq!(expected, granted, "exactly {verb} on {resource} is gone");
    role
}

impl Deployment {
    /// Renders the chart with `config` (more of `.Values.config`) and installs it.
    fn install(config: Value) -> Self {
        let mut values = json!({"config": {"kubernetes": {"namespaces": [WATCHED]}}});
        for (k, v) in config.as_object().unwrap() {
            values["config"][k] = v.clone();
        }
        let rendered = render(values, RELEASE, NAMESPACE);
        // The replicas run as the ServiceAccount the Role is bound to, in `default`
        // only.
        assert_eq!(rendered.pod()["serviceAccountName"], SERVICE_ACCOUNT);
        rendered.one("ServiceAccount", SERVICE_ACCOUNT);
        assert!(rendered.all("ClusterRole").is_empty());
        assert_eq!(
            rendered.one("Role", "gw-ssh-gateway")["metadata"]["namespace"],
            WATCHED
        );
        assert_eq!(
            rendered.one("RoleBinding", "gw-ssh-gateway")["subjects"],
            json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}])
        );
        let dir = tempfile::tempdir().unwrap();
        let emu = EmulatorThread::start(
            &dir.path().join("cluster"),
            &dir.path().join("admin.kubeconfig"),
        );
        std::fs::write(
            dir.path().join("kubeconfig"),
            emu.emulator().kubeconfig_with_token(Some(SA_TOKEN)),
        )
        .unwrap();
        std::fs::write(dir.path().join("gateway.toml"), rendered.gateway_toml()).unwrap();
        let d = Deployment {
            emu,
            objects: rendered.objects.clone(),
            alice: keygen(dir.path(), "alice", &["-t", "ed25519"]),
            bob: keygen(dir.path(), "bob", &["-t", "ed25519"]),
            dir,
            starts: std::cell::Cell::new(0),
        };
        d.emu.set_rbac(Some(d.policy(None)));
        // As the chart's hook Job, before any replica: they only check the schema.
        d.cli(&["migrate", "--config"]);
        for (name, key) in [("alice", &d.alice), ("bob", &d.bob)] {
            d.cli(&["admin", "--config", "", "user", "add", name]);
            register_key(&d.db_url(), name, key);
        }
        d.sandboxes();
        d
    }

    fn db_url(&self) -> String {
        format!("sqlite://{}/gw.db", self.dir.path().display())
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    /// What differs on this machine from the chart's pod, as environment overrides.
    fn env(&self, ssh_port: u16, api_port: u16) -> Vec<(String, String)> {
        let d = self.dir.path().display();
        [
            ("DATABASE__URL", self.db_url()),
            ("SSH__LISTEN", format!("127.0.0.1:{ssh_port}")),
            ("API__LISTEN", format!("127.0.0.1:{api_port}")),
            ("SSH__HOST_KEY_DIR", format!("{d}/host-keys")),
            ("KUBERNETES__KUBECONFIG", format!("{d}/kubeconfig")),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SSH_GATEWAY__{k}"), v))
        .collect()
    }

    /// `ssh-gateway ARGS…` with the overrides; an empty argument after `--config` (or
    /// `--config` last) is the chart's gateway.toml.
    fn cli(&self, args: &[&str]) -> String {
        let config = self.config().display().to_string();
        let mut args: Vec<&str> = args.to_vec();
        match args.iter().position(|a| a.is_empty()) {
            Some(i) => args[i] = &config,
            None => args.push(&config),
        }
        let out = Command::new(BIN)
            .args(&args)
            .envs(self.env(0, 0))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// The chart's RBAC objects, with `verb` off `resource` in its Role when given,
    /// and the ServiceAccount's token.
    fn policy(&self, taken_off: Option<(&str, &str)>) -> Rbac {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|o| match taken_off {
                Some((resource, verb)) if o["kind"] == "Role" => without(o, resource, verb),
                _ => o.clone(),
            })
            .collect();
        Rbac::from_objects(&objects, NAMESPACE)
            .unwrap()
            .with_service_account(SA_TOKEN, ServiceAccount::new(NAMESPACE, SERVICE_ACCOUNT))
    }

    /// The Role as rendered.
    fn role(&self) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == "Role")
            .expect("a Role")
    }

    /// alpha: a bare pod, alice's, bob a member. sleepy: a StatefulSet paused at 0.
    /// team: a running StatefulSet, alice's, bob a member. orphan: a running
    /// StatefulSet that does not carry the target label (only its pods do), which the
    /// gateway reads by name from the pod's controller reference.
    fn sandboxes(&self) {
        let (labels, mut annotations) = sandbox("alpha", "alice");
        annotations[MEMBERS] = json!("bob");
        self.emu.pod(WATCHED, "sandbox-alpha", labels, annotations);
        let owner = json!({"ssh-gateway.io/owner": "alice"});
        self.set("sleepy", 0, true, owner.clone());
        self.set(
            "team",
            1,
            true,
            json!({"ssh-gateway.io/owner": "alice", MEMBERS: "bob"}),
        );
        self.set("orphan", 1, false, owner);
    }

    fn set(&self, id: &str, replicas: u64, labeled: bool, annotations: Value) {
        let label = json!({"ssh-gateway.io/sandbox": id});
        let labels = if labeled {
            label.clone()
        } else {
            json!({"app": id})
        };
        self.emu.create(
            Kind::StatefulSet,
            WATCHED,
            json!({
                "metadata": {"name": id, "labels": labels, "annotations": annotations},
                "spec": {
                    "replicas": replicas, "serviceName": id,
                    "selector": {"matchLabels": label},
                    "template": {
                        "metadata": {"labels": label},
                        "spec": {"containers": [{"name": "main", "image": "debian:12"}]},
                    },
                },
            }),
        );
    }

    fn replicas(&self, set: &str) -> u64 {
        self.emu.get(Kind::StatefulSet, WATCHED, set)["spec"]["replicas"]
            .as_u64()
            .unwrap()
    }

    fn set_replicas(&self, set: &str, replicas: u64) {
        self.emu.update(Kind::StatefulSet, WATCHED, set, |s| {
            s["spec"]["replicas"] = json!(replicas)
        });
    }

    /// Starts a gateway on fresh ports, logging to a file of its own.
    fn serve(&self) -> Gateway {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        let (ssh_port, api_port) = (free_port(), free_port());
        let log = self.dir.path().join(format!("gateway-{n}.log"));
        let env = self.env(ssh_port, api_port);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let serve = Serve::start_with_env(&self.config(), &log, api_port, &env);
        Gateway {
            ssh_port,
            log,
            _serve: serve,
        }
    }

    /// A StatefulSet `doomed` of one pod, alice's, whose pod is to be deleted under a
    /// session. (A set's: the emulator deletes a pod at once, without the Terminating
    /// phase a real API server gives it, so a bare pod's deletion would also read as
    /// the target gone to the access watch, racing the stream's end; with the set
    /// still there the target is only not ready.)
    fn doomed(&self) {
        self.set("doomed", 1, true, json!({"ssh-gateway.io/owner": "alice"}));
    }
}

impl Gateway {
    fn ssh(&self, key: &KeyPair) -> Command {
        support::client("ssh", key, self.ssh_port)
    }

    fn exec(&self, key: &KeyPair, target: &str, command: &str) -> Output {
        let mut cmd = self.ssh(key);
        cmd.args([&format!("{target}@127.0.0.1"), command]);
        run(cmd)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `needle` in the log (lines are written as things happen).
    fn wait_log(&self, needle: &str) {
        if !wait_until(Duration::from_secs(15), || self.log().contains(needle)) {
            panic!("the gateway's log never said {needle:?}:\n{}", self.log());
        }
    }

    /// `sftp -b` with `batch` as alice's.
    fn sftp(&self, key: &KeyPair, target: &str, batch: &str) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("batch");
        std::fs::write(&file, batch).unwrap();
        let mut cmd = support::client("sftp", key, self.ssh_port);
        cmd.arg("-b").arg(&file).arg(format!("{target}@127.0.0.1"));
        run(cmd)
    }

    /// `ssh -W localhost:PORT` to a line-echoing server "in" the pod (a pod's ports
    /// are this machine's loopback ports here).
    fn forward_w(&self, key: &KeyPair, target: &str) -> Output {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((conn, _)) = server.accept() else {
                return;
            };
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let _ = (&conn).write_all(format!("pod heard {line}").as_bytes());
        });
        let mut cmd = self.ssh(key);
        cmd.args([
            "-W",
            &format!("localhost:{port}"),
            &format!("{target}@127.0.0.1"),
        ]);
        run_with_input(cmd, b"ping\n")
    }

    /// `ssh -N -L` to a port in the sandbox, one connection through it, and what ssh
    /// printed meanwhile (it stays up when a forwarded connection is refused).
    fn forward_l(&self, key: &KeyPair, target: &str) -> (String, String) {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = server.accept() {
                let _ = conn.write_all(b"from the pod");
            }
        });
        let local = free_port();
        // At OpenSSH's default log level, which prints refused forwards (the other
        // commands here run at ERROR).
        let opts = support::Gateway::client_opts_for(&key.private)
            .into_iter()
            .map(|o| {
                if o == "LogLevel=ERROR" {
                    "LogLevel=INFO".to_owned()
                } else {
                    o
                }
            });
        let mut cmd = Command::new("ssh");
        cmd.args(opts).args(["-p", &self.ssh_port.to_string()]);
        cmd.args([
            "-N",
            "-L",
            &format!("{local}:localhost:{port}"),
            &format!("{target}@127.0.0.1"),
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut got = Vec::new();
        let connected = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", local)).is_ok_and(|mut c| {
                let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                let _ = std::io::Read::read_to_end(&mut c, &mut got);
                true
            })
        });
        assert!(connected, "ssh -L never listened");
        // Give ssh a moment to print the refusal before it is stopped.
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (String::from_utf8_lossy(&got).into_owned(), stderr(&out))
    }
}

/// What the user read is the gateway's own words: no Kubernetes detail leaks.
fn assert_clean(out: &Output, what: &str) {
    assert_clean_text(&stderr(out), what)
}

fn assert_clean_text(err: &str, what: &str) {
    for leak in [
        "forbidden",
        "Forbidden",
        "system:serviceaccount",
        "rbac",
        "ApiError",
        "Status {",
    ] {
        assert!(!err.contains(leak), "{what}: the user read {leak:?}: {err}");
    }
}

#[test]
fn the_charts_rules_are_enough_for_everything_the_gateway_does() {
    let d = Deployment::install(json!({"activity": {"pause_after_idle_secs": 1}}));
    let gw = d.serve();

    // Exec, with its exit status; a PTY shell as a person's terminal drives it.
    let out = gw.exec(&d.alice, "alpha", "echo $HOSTNAME; exit 3");
    assert_eq!(stdout(&out), "sandbox-alpha\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3));
    // A login shell on a PTY (`ssh -tt`, no command), typed into. The terminal's
    // finer points (resize, ^C) are tests/kube.rs's; RBAC-wise a shell is one more
    // pods/exec stream.
    let mut shell = gw.ssh(&d.alice);
    shell.args(["-tt", "alpha@127.0.0.1"]);
    let out = run_with_input(
        shell,
        b"echo \"on $(tty | cut -c1-8) in $((6*7))\"; exit 4\n",
    );
    assert!(
        stdout(&out).contains("on /dev/pts in 42"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(4));

    // SFTP.
    let local = d.dir.path().join("up.txt");
    std::fs::write(&local, "over sftp\n").unwrap();
    let out = gw.sftp(
        &d.alice,
        "alpha",
        &format!("put {} up.txt\n", local.display()),
    );
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    let pod_dir = d.emu.pod_dir(WATCHED, "sandbox-alpha");
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("up.txt")).unwrap(),
        "over sftp\n"
    );

    // Port forwards: ssh -L and ssh -W.
    let (_, response) =
        support::forward::http_through_tunnel("localhost", b"from the pod", |spec| {
            let mut cmd = gw.ssh(&d.alice);
            cmd.args([
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                spec,
                "alpha@127.0.0.1",
            ]);
            cmd
        });
    assert!(response.ends_with("from the pod"), "{response:?}");
    let out = gw.forward_w(&d.alice, "alpha");
    assert_eq!(stdout(&out), "pod heard ping\n", "{}", stderr(&out));

    // Wake on connect: the paused set is scaled up (the scale subresource), its pod
    // waited for (list and watch), the connection lands.
    let out = gw.exec(&d.alice, "sleepy", "echo woke");
    assert_eq!(stdout(&out), "woke\n", "{}\n{}", stderr(&out), gw.log());
    assert!(
        stderr(&out).contains("sleepy is paused; resuming it"),
        "{}",
        stderr(&out)
    );
    // Activity lands on the set as annotations (a patch), and once nobody has used it
    // for a second the gateway pauses it again (the scale subresource).
    let annotated = wait_until(Duration::from_secs(10), || {
        let set = d.emu.get(Kind::StatefulSet, WATCHED, "sleepy");
        set["metadata"]["annotations"]["ssh-gateway.io/last-activity"].is_string()
    });
    assert!(annotated, "no activity annotations:\n{}", gw.log());
    assert!(
        wait_until(Duration::from_secs(15), || d.replicas("sleepy") == 0),
        "not paused after idling:\n{}",
        gw.log()
    );
    gw.wait_log("paused after idling");

    // A pod whose StatefulSet does not carry the label: the set is read by name.
    let out = gw.exec(&d.alice, "orphan", "echo $HOSTNAME");
    assert_eq!(stdout(&out), "orphan-0\n", "{}\n{}", stderr(&out), gw.log());

    // Access edited on the cluster ends a live session at once: on a pod (the pod
    // watch) and on a StatefulSet (the set watch).
    for (target, edit) in [("alpha", Kind::Pod), ("team", Kind::StatefulSet)] {
        let mut cmd = gw.ssh(&d.bob);
        cmd.arg(format!("{target}@127.0.0.1"));
        let session = live(cmd, "echo started; sleep 120", "bob's session");
        let take_bob_off = |o: &mut Value| o["metadata"]["annotations"][MEMBERS] = json!("");
        match edit {
            Kind::Pod => d.emu.update_pod(WATCHED, "sandbox-alpha", take_bob_off),
            Kind::StatefulSet => d.emu.update(edit, WATCHED, target, take_bob_off),
        }
        let out = session.ended(Duration::from_secs(20));
        assert!(
            stderr(&out).contains("your access to this sandbox was removed"),
            "{target}: {}\n{}",
            stderr(&out),
            gw.log()
        );
    }

    // A pod deleted under a session: the gateway reads the pod to say so, even though
    // its StatefulSet has already made a new pod of the same name (the controller
    // does at once; touching the set makes the emulator's reconcile now).
    d.doomed();
    let mut cmd = gw.ssh(&d.alice);
    cmd.arg("doomed@127.0.0.1");
    let session = live(cmd, "echo started; sleep 120", "alice's session");
    d.emu.delete_pod(WATCHED, "doomed-0");
    d.emu.update(Kind::StatefulSet, WATCHED, "doomed", |_| {});
    let out = session.ended(Duration::from_secs(30));
    assert!(
        stderr(&out).contains("was deleted; the session has ended"),
        "{}\n{}",
        stderr(&out),
        gw.log()
    );

    // And the API server refused it nothing along the way.
    assert!(!gw.log().contains("forbidden"), "{}", gw.log());
}

#[test]
fn every_verb_of_the_charts_role_is_needed() {
    let d = Deployment::install(json!({}));
    let full = grants(d.role());
    let mut gw = d.serve();
    // The watches the gateway keeps open (access edits) are authorized when they
    // start, so a policy that takes `watch` away needs a gateway started under it;
    // everything else is authorized per request, and the policy is swapped in place.
    let mut restarted = false;
    for (resource, verb) in &full {
        let (resource, verb) = (resource.as_str(), verb.as_str());
        let case = format!("without {verb} on {resource}");
        d.emu.set_rbac(Some(d.policy(Some((resource, verb)))));
        if verb == "watch" {
            drop(gw);
            gw = d.serve();
            restarted = true;
        }
        // Only what the log says from here on counts for this case.
        let before = gw.log().len();
        // What each missing verb breaks; the API server's words reach the log only.
        let denied = match (resource, verb) {
            // Every connection lists the target's pods first.
            ("pods", "list") => {
                let out = gw.exec(&d.alice, "alpha", "echo in");
                assert_eq!(stderr(&out), format!("ssh-gateway: {DENIED}\n"), "{case}");
                format!(
                    "pods is forbidden: {USER} cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
                )
            }
            // … and its StatefulSets.
            ("statefulsets", "list") => {
                let out = gw.exec(&d.alice, "alpha", "echo in");
                assert_eq!(stderr(&out), format!("ssh-gateway: {DENIED}\n"), "{case}");
                format!(
                    "statefulsets.apps is forbidden: {USER} cannot list resource \"statefulsets\" in API group \"apps\" in the namespace \"default\""
                )
            }
            // A pod's controller not among the listed sets is read by name.
            ("statefulsets", "get") => {
                let out = gw.exec(&d.alice, "orphan", "echo in");
                assert_eq!(stderr(&out), format!("ssh-gateway: {DENIED}\n"), "{case}");
                format!(
                    "statefulsets.apps \"orphan\" is forbidden: {USER} cannot get resource \"statefulsets\" in API group \"apps\" in the namespace \"default\""
                )
            }
            // Every stream is pinned to the pod its access was decided on by reading
            // that pod once the stream is open (the exec and port-forward APIs take a
            // name, which a re-created pod reuses): without `get`, nothing runs.
            ("pods", "get") => {
                let out = gw.exec(&d.alice, "alpha", "echo in");
                assert_eq!(stderr(&out), format!("ssh-gateway: {DENIED}\n"), "{case}");
                assert_ne!(out.status.code(), Some(0));
                assert!(!stdout(&out).contains("in"), "{case}: it ran");
                let (got, err) = gw.forward_l(&d.alice, "alpha");
                assert_eq!(got, "", "{case}: the forward worked");
                assert!(err.contains(DENIED), "{case}: {err}");
                format!(
                    "pods \"sandbox-alpha\" is forbidden: {USER} cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
                )
            }
            // Shell, exec and SFTP are pods/exec streams: the WebSocket GET is
            // authorized as `get`, then (Kubernetes 1.35 on) as `create` too, whose
            // refusal has no detail after the colon.
            ("pods/exec", "get" | "create") => {
                let out = gw.exec(&d.alice, "alpha", "echo in");
                assert_eq!(stderr(&out), format!("ssh-gateway: {DENIED}\n"), "{case}");
                assert_ne!(out.status.code(), Some(0));
                let out = gw.sftp(&d.alice, "alpha", "pwd\n");
                assert!(!out.status.success(), "{case}: sftp worked");
                assert_clean(&out, &case);
                let mut shell = gw.ssh(&d.alice);
                shell.args(["-tt", "alpha@127.0.0.1"]);
                let out = run_with_input(shell, b"echo in; exit\n");
                assert!(stderr(&out).contains(DENIED), "{case}: {}", stderr(&out));
                assert!(!stdout(&out).contains("in\r\n"), "{case}: a shell ran");
                assert_clean(&out, &case);
                websocket_denial(&gw.log()[before..], verb, "pods/exec", &case)
            }
            ("pods/portforward", "get" | "create") => {
                let (got, err) = gw.forward_l(&d.alice, "alpha");
                assert_eq!(got, "", "{case}: the forward worked");
                assert!(
                    err.contains("open failed: connect failed: ssh-gateway: port ")
                        && err.contains(&format!("in the sandbox: {DENIED}")),
                    "{case}: {err}"
                );
                assert_clean_text(&err, &case);
                // `ssh -W` fails too, though OpenSSH says only "stdio forwarding
                // failed" unless asked for more (-v).
                let out = gw.forward_w(&d.alice, "alpha");
                assert!(!out.status.success(), "{case}: {}", stdout(&out));
                assert!(stderr(&out).contains("stdio forwarding failed"), "{case}");
                websocket_denial(&gw.log()[before..], verb, "pods/portforward", &case)
            }
            // Wake on connect scales through the subresource.
            ("statefulsets/scale", "patch") => {
                d.set_replicas("sleepy", 0);
                let out = gw.exec(&d.alice, "sleepy", "echo woke");
                assert_ne!(out.status.code(), Some(0));
                assert!(
                    stderr(&out).contains("ssh-gateway: sandbox \"sleepy\" could not be resumed: the cluster refused to scale it up (see the gateway's log)"),
                    "{case}: {}",
                    stderr(&out)
                );
                assert_clean(&out, &case);
                assert_eq!(d.replicas("sleepy"), 0);
                gw.wait_log("scale-up refused");
                format!(
                    "statefulsets.apps \"sleepy\" is forbidden: {USER} cannot patch resource \"statefulsets/scale\" in API group \"apps\" in the namespace \"default\""
                )
            }
            // Activity is written onto the set in the background: the session is
            // unaffected, the annotations do not appear.
            ("statefulsets", "patch") => {
                d.emu.update(Kind::StatefulSet, WATCHED, "team", |s| {
                    s["metadata"]["annotations"] = json!({"ssh-gateway.io/owner": "alice"})
                });
                let out = gw.exec(&d.alice, "team", "echo in");
                assert_eq!(stdout(&out), "in\n", "{case}: {}", stderr(&out));
                gw.wait_log("activity report failed");
                let set = d.emu.get(Kind::StatefulSet, WATCHED, "team");
                assert!(set["metadata"]["annotations"]["ssh-gateway.io/open-sessions"].is_null());
                format!(
                    "statefulsets.apps \"team\" is forbidden: {USER} cannot patch resource \"statefulsets\" in API group \"apps\" in the namespace \"default\""
                )
            }
            // The access watch cannot be opened. The gateway keeps trying, warning each
            // time, and re-lists between tries with its backoff doubling up to 30 s:
            // an access edit still reaches a live session, but only at the next try
            // (up to 30 s late) instead of at once, while the log fills with warnings.
            // (Waking a paused set also watches pods, and falls back to listing them
            // every 200 ms without a word.)
            ("pods" | "statefulsets", "watch") => {
                let kind = if resource == "pods" {
                    "Pod"
                } else {
                    "StatefulSet"
                };
                let failed = format!("watching for access changes failed; retrying kind={kind}");
                let retried = wait_until(Duration::from_secs(10), || {
                    gw.log()[before..].matches(&failed).count() >= 6
                });
                assert!(retried, "{case}: the watch was not retried:\n{}", gw.log());
                assert!(
                    !gw.log()[before..].contains("access on the cluster changed"),
                    "{case}"
                );
                // Connections are not affected.
                let target = if resource == "pods" { "alpha" } else { "team" };
                let out = gw.exec(&d.alice, target, "echo in");
                assert_eq!(stdout(&out), "in\n", "{case}: {}", stderr(&out));
                let group = if resource == "pods" { "" } else { "apps" };
                let plural = if resource == "pods" {
                    "pods".to_owned()
                } else {
                    "statefulsets.apps".to_owned()
                };
                format!(
                    "{plural} is forbidden: {USER} cannot watch resource \"{resource}\" in API group \"{group}\" in the namespace \"default\""
                )
            }
            _ => panic!(
                "the chart grants {verb} on {resource}, and nothing here needs it: \
                 add the case, or take the verb out of the chart"
            ),
        };
        // The log says it in the API server's words (as written, or quoted).
        let quoted = denied.replace('"', "\\\"");
        let said = wait_until(Duration::from_secs(15), || {
            let log = gw.log();
            let log = log.get(before..).unwrap_or_default();
            log.contains(&denied) || log.contains(&quoted)
        });
        assert!(
            said,
            "{case}: the log does not say {denied:?}:\n{}",
            gw.log()
        );
        // The full policy again: what was refused works.
        d.emu.set_rbac(Some(d.policy(None)));
    }
    assert!(restarted);
}

/// What the API server says when a WebSocket upgrade (exec, port-forward) lacks
/// `verb` on `subresource` of the alpha pod: `get` fails RBAC's first check with the
/// usual text; `create` fails the 1.35 compound check, whose message ends at the colon
/// (the first check, as `get`, passed: the log says nothing of it).
fn websocket_denial(log: &str, verb: &str, subresource: &str, case: &str) -> String {
    if verb == "get" {
        format!(
            "pods \"sandbox-alpha\" is forbidden: {USER} cannot get resource \"{subresource}\" in API group \"\" in the namespace \"default\""
        )
    } else {
        assert!(!log.contains("cannot get resource"), "{case}");
        "pods \"sandbox-alpha\" is forbidden: ".to_owned()
    }
}
