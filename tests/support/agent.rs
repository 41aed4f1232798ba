//! A real `ssh-agent` holding one fresh ed25519 key, for agent-forwarding tests: the
//! laptop side of `ssh -A`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{KeyPair, keygen};

pub struct Agent {
    /// The agent's socket, as `SSH_AUTH_SOCK` on the laptop.
    pub sock: PathBuf,
    /// The key it holds.
    pub key: KeyPair,
    /// That key's `SHA256:…` fingerprint, as `ssh-add -l` prints it.
    pub fingerprint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent runs");
        // Made at once, so a failure below still ends the agent (on drop).
        let mut agent = Agent {
            sock,
            key: KeyPair {
                private: PathBuf::new(),
                public_line: String::new(),
            },
            fingerprint: String::new(),
            child,
            _dir: dir,
        };
        let sock = agent.sock.clone();
        assert!(
            super::process::wait_until(Duration::from_secs(10), || sock.exists()),
            "ssh-agent did not listen"
        );
        let key = keygen(agent._dir.path(), "forwarded", &["-t", "ed25519"]);
        let added = Command::new("ssh-add")
            .arg("-q")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let listed = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(format!("{}.pub", key.private.display()))
            .output()
            .unwrap();
        agent.fingerprint = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_owned();
        agent.key = key;
        agent
    }

    /// `ssh` as a user runs it: `ssh -A` with this agent in `SSH_AUTH_SOCK`. Made from
    /// `cmd` (an `ssh` with the common options), whose `IdentityAgent=none` would hide
    /// the agent (OpenSSH then forwards nothing): it becomes the default, the
    /// variable. The connection still logs in with its `-i` key only
    /// (`IdentitiesOnly=yes`).
    pub fn forwarding(&self, cmd: &Command) -> Command {
        let mut forwarding = Command::new(cmd.get_program());
        for arg in cmd.get_args() {
            if arg == "IdentityAgent=none" {
                forwarding.arg("IdentityAgent=SSH_AUTH_SOCK");
            } else {
                forwarding.arg(arg);
            }
        }
        for (name, value) in cmd.get_envs() {
            match value {
                Some(value) => forwarding.env(name, value),
                None => forwarding.env_remove(name),
            };
        }
        forwarding.arg("-A").env("SSH_AUTH_SOCK", &self.sock);
        forwarding
    }

    /// The key's `type base64` words, as `ssh-add -L` prints them before the comment.
    pub fn public_words(&self) -> String {
        self.key
            .public_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
