//! OpenSSH connection multiplexing: one master connection (`ControlMaster`), and
//! commands and forwards run over it as new channels, as VS Code and `ssh -S` do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{Gateway, run};

pub struct Master {
    path: PathBuf,
    base: Vec<String>,
    user: String,
}

impl Master {
    /// Opens a master connection to `user@127.0.0.1:port` with `key`; its control
    /// socket lives in `dir`.
    pub fn open(port: u16, key: &Path, dir: &Path, user: &str) -> Self {
        let path = dir.join("ctl");
        let base: Vec<String> = Gateway::client_opts_for(key)
            .into_iter()
            .chain(["-p".into(), port.to_string()])
            .collect();
        let status = Command::new("ssh")
            .args(&base)
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-o"])
            .arg(format!("ControlPath={}", path.display()))
            .args(["-f", "-N", &format!("{user}@127.0.0.1")])
            .status()
            .expect("ssh runs");
        assert!(status.success(), "master connection failed");
        Master {
            path,
            base,
            user: user.to_owned(),
        }
    }

    /// `ssh -S ctl …` with these extra arguments (a command, `-O forward`, …).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(&self.base).arg("-S").arg(&self.path);
        cmd
    }

    /// Runs `command` over the master connection as a new session channel.
    pub fn run(&self, command: &str) -> Output {
        let mut cmd = self.command();
        cmd.args([&format!("{}@127.0.0.1", self.user), command]);
        run(cmd)
    }

    /// Whether the master connection is still there (`ssh -O check`).
    pub fn is_up(&self) -> bool {
        let mut cmd = self.command();
        cmd.args(["-O", "check"])
            .arg(format!("{}@127.0.0.1", self.user));
        run(cmd).status.success()
    }

    /// Adds `-L local:localhost:remote` to the master.
    pub fn forward(&self, local: u16, remote: u16) {
        let mut cmd = self.command();
        cmd.args([
            "-O",
            "forward",
            "-L",
            &format!("{local}:localhost:{remote}"),
        ])
        .arg(format!("{}@127.0.0.1", self.user));
        let out = run(cmd);
        assert!(out.status.success(), "{}", super::stderr(&out));
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = Command::new("ssh")
            .arg("-S")
            .arg(&self.path)
            .args(["-O", "exit", "x"])
            .output();
    }
}
