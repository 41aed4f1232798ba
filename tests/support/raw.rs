//! SSH messages OpenSSH's client never sends, sent by paramiko (Debian's
//! python3-paramiko), whose transport can send any message.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `command` on `user@127.0.0.1:port` with `key`, waits for its first line of
/// output, sends a `signal` request (RFC 4254 §6.9) naming `signal` (`TERM`), and
/// returns the process's output: the rest of the program's stdout, a space, and its
/// exit status.
pub fn signal_after_first_line(
    port: u16,
    key: &Path,
    user: &str,
    command: &str,
    signal: &str,
) -> Output {
    let script = r#"
import sys, paramiko
from paramiko.message import Message
from paramiko.common import cMSG_CHANNEL_REQUEST
port, key, user, command, signal = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", port=port, username=user, key_filename=key, look_for_keys=False, allow_agent=False)
t = c.get_transport()
ch = t.open_session()
ch.exec_command(command)
out = ch.makefile()
line = out.readline()
assert line, "no first line"
m = Message()
m.add_byte(cMSG_CHANNEL_REQUEST)
m.add_int(ch.remote_chanid)
m.add_string("signal")
m.add_boolean(False)
m.add_string(signal)
t._send_user_message(m)
print(out.read().decode().strip(), ch.recv_exit_status())
"#;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-W", "ignore", "-c", script])
        .arg(port.to_string())
        .arg(key)
        .args([user, command, signal]);
    super::run(cmd)
}
