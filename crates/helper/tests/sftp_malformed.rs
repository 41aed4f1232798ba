//! Malformed SFTP input ends the session with a message on stderr and a non-zero
//! exit — never a panic, never a hang.

mod support;

use sgw_helper::sftp::packet::*;
use support::raw::*;
use support::*;

fn session() -> (tempfile::TempDir, Raw) {
    let dir = tempdir();
    let mut c = Raw::spawn(&[helper(), "sftp-server"], dir.path());
    c.init();
    (dir, c)
}

fn assert_fatal(c: Raw, code: i32, needle: &str) {
    let (status, stderr) = c.finish();
    assert_eq!(status, Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn an_oversized_packet_ends_the_session_like_openssh() {
    let (_d, mut c) = session();
    c.send_raw(&((MAX_MSG_LENGTH as u32) + 1).to_be_bytes());
    assert!(c.recv().is_none(), "no reply, the server exits");
    assert_fatal(c, 11, "exceeds the maximum");
}

#[test]
fn a_packet_cut_short_by_eof_is_an_error() {
    let (_d, mut c) = session();
    c.send_raw(&[0, 0, 0, 50, FXP_STAT, 0, 0]);
    assert_fatal(c, 255, "input ended inside a packet");
}

#[test]
fn fields_running_past_their_packet_are_an_error() {
    let (_d, mut c) = session();
    // A STAT whose path claims 1000 bytes in a 13-byte packet.
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&1000u32.to_be_bytes());
    body.extend_from_slice(b"abcd");
    c.send(FXP_STAT, &body);
    assert_fatal(c, 255, "truncated path");
}

#[test]
fn a_handle_longer_than_its_packet_is_an_error_and_an_unknown_one_a_failure() {
    let (_d, mut c) = session();
    // Well-formed but unknown handles get SSH_FX_FAILURE, as from OpenSSH...
    assert_eq!(
        c.call(FXP_READ, &read_body(b"\xff\xff\xff\xff\0\0\0\x01", 0, 10)),
        Reply::Status(FX_FAILURE, "Failure".into())
    );
    assert_eq!(
        c.call(FXP_CLOSE, &path_body(b"bogus")),
        Reply::Status(FX_NO_SUCH_FILE, "No such file".into())
    );
    // ...while a handle string overrunning the packet ends the session.
    let mut body = 9u32.to_be_bytes().to_vec();
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    c.send(FXP_CLOSE, &body);
    assert!(c.recv().is_none());
    assert_fatal(c, 255, "truncated handle");
}

#[test]
fn garbage_after_init_ends_the_session() {
    let (_d, mut c) = session();
    c.send_raw(b"\xde\xad\xbe\xef garbage that is no packet");
    assert_fatal(c, 11, "bad message");
}

#[test]
fn an_empty_packet_and_a_nul_in_a_path_are_errors() {
    let (_d, mut c) = session();
    c.send_raw(&[0, 0, 0, 0]);
    assert_fatal(c, 255, "empty packet");

    let (_d, mut c) = session();
    let mut body = 1u32.to_be_bytes().to_vec();
    put_string(&mut body, b"a\0b");
    c.send(FXP_STAT, &body);
    assert_fatal(c, 255, "invalid path");
}

#[test]
fn requests_before_init_are_refused() {
    let dir = tempdir();
    let mut c = Raw::spawn(&[helper(), "sftp-server"], dir.path());
    let mut body = 1u32.to_be_bytes().to_vec();
    put_string(&mut body, b".");
    c.send(FXP_STAT, &body);
    assert_fatal(c, 255, "before init");
}

#[test]
fn unknown_packet_types_are_answered_and_the_session_goes_on() {
    let (_d, mut c) = session();
    assert_eq!(
        c.call(77, b""),
        Reply::Status(FX_OP_UNSUPPORTED, "Operation unsupported".into())
    );
    assert!(matches!(
        c.call(FXP_STAT, &path_body(b".")),
        Reply::Attrs(_)
    ));
    let (code, _) = c.finish();
    assert_eq!(code, Some(0), "a clean EOF exits 0");
}

#[test]
fn unknown_subcommands_and_bad_options_print_usage() {
    let out = std::process::Command::new(helper())
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    let out = std::process::Command::new(helper())
        .args(["sftp-server", "-x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(helper())
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "ssh-gateway-helper {} {}\n",
            sgw_helper::PROTOCOL,
            env!("CARGO_PKG_VERSION")
        )
    );
}
