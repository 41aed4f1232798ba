//! Authorized-key lines as the API takes them (`POST /users/me/ssh-keys`, the
//! certificate request's `public_key`) and key names: `parse_public_key` and
//! `check_key_name` return without panicking; a key they accept is of an accepted
//! type, its normalized line parses back to exactly the same key, and nothing they
//! accept carries a character that would rewrite a terminal or a log line.
//!
//! Input: a first byte of 0 builds the line from the rest, `<type> <base64 of the
//! rest> comment`, with the type picked by the second byte, so the key decoders see
//! structured blobs (random text rarely base64-decodes into one); any other first
//! byte is followed by the line itself, a NUL, and a key name.
#![no_main]

#[path = "../../src/keys.rs"]
#[allow(dead_code)]
mod keys;

use base64::Engine;
use libfuzzer_sys::fuzz_target;

/// Type names a line may start with: every accepted one, refused ones, and
/// certificates (which the API must refuse as keys).
const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
];

const ACCEPTED: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fuzz_target!(|data: &[u8]| {
    let (line, name) = match data {
        [0, pick, blob @ ..] => {
            let kind = TYPES[usize::from(*pick) % TYPES.len()];
            let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
            (format!("{kind} {b64} fuzz@host"), String::new())
        }
        [_, rest @ ..] => {
            let mut parts = rest.splitn(2, |b| *b == 0);
            let line = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            (line, name)
        }
        [] => return,
    };

    if let Ok(parsed) = keys::parse_public_key(&line) {
        assert!(
            ACCEPTED.contains(&parsed.key_type.as_str()),
            "accepted a {} key: {line:?}",
            parsed.key_type
        );
        assert!(parsed.fingerprint.starts_with("SHA256:"), "{parsed:?}");
        assert!(!parsed.normalized.contains(['\n', '\r']), "{parsed:?}");
        assert!(
            !parsed.comment.chars().any(keys::is_unsafe_char),
            "{parsed:?}"
        );
        assert!(
            parsed
                .normalized
                .starts_with(&format!("{} ", parsed.key_type)),
            "{parsed:?}"
        );
        // What the store keeps is a fixed point: parsing it again gives it back.
        assert_eq!(
            keys::parse_public_key(&parsed.normalized).as_ref(),
            Ok(&parsed),
            "{line:?}"
        );
    }

    if let Ok(checked) = keys::check_key_name(&name) {
        assert!(!checked.is_empty() && checked.len() <= 128, "{name:?}");
        assert_eq!(checked, checked.trim());
        assert!(!checked.chars().any(keys::is_unsafe_char), "{name:?}");
    }

    // Whatever is shown escaped shows no unsafe character.
    assert!(!keys::escape(&line).chars().any(keys::is_unsafe_char));
});
