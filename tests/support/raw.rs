//! SSH messages OpenSSH's client never sends, sent by paramiko (Debian's
//! python3-paramiko), whose transport can send any message.

use std::path::Path;
use std::process::{Command, Output};

/// What every script starts with: `t`, the transport of a connection logged in as
/// `user` with `key`; `channel_request(ch, name, *words)` sends a channel request
/// that wants no reply; `args` are the script's own arguments.
const PRELUDE: &str = r#"
import sys, paramiko
from paramiko.message import Message
from paramiko.common import cMSG_CHANNEL_REQUEST, cMSG_REQUEST_FAILURE
port, key, user, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", port=port, username=user, key_filename=key, look_for_keys=False, allow_agent=False)
t = c.get_transport()
def channel_request(ch, name, *words):
    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(ch.remote_chanid)
    m.add_string(name)
    m.add_boolean(False)
    for w in words:
        if isinstance(w, int):
            m.add_int(w)
        else:
            m.add_string(w)
    t._send_user_message(m)
"#;

/// Runs `body` (Python, after [`PRELUDE`]) against `user@127.0.0.1:port`.
pub fn paramiko(port: u16, key: &Path, user: &str, body: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-W", "ignore", "-c", &format!("{PRELUDE}{body}")])
        .arg(port.to_string())
        .arg(key)
        .arg(user)
        .args(args);
    super::run(cmd)
}

/// Runs `command`, waits for its first line of output, sends a `signal` request
/// (RFC 4254 §6.9) naming `signal` (`TERM`), and returns the process's output: the
/// rest of the program's stdout, a space, and its exit status.
pub fn signal_after_first_line(
    port: u16,
    key: &Path,
    user: &str,
    command: &str,
    signal: &str,
) -> Output {
    let body = r#"
command, signal = args
ch = t.open_session()
ch.exec_command(command)
out = ch.makefile()
assert out.readline(), "no first line"
channel_request(ch, "signal", signal)
print(out.read().decode().strip(), ch.recv_exit_status())
"#;
    paramiko(port, key, user, body, &[command, signal])
}
