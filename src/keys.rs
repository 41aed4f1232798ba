//! Public keys users upload: parse one authorized_keys line, enforce the key policy, and
//! produce the normalized form the store keeps and the fingerprint auth looks keys up by.

use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, HashAlg, PublicKey};

/// Longest line accepted; an RSA 16384-bit key is ~2.8 KiB, certificates and options
/// are not accepted here.
const MAX_LINE: usize = 16 * 1024;
const MIN_RSA_BITS: u32 = 2048;
const MAX_COMMENT: usize = 1024;

/// A public key that passed the policy, in the shapes the API and the store need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// `type base64 [comment]`, whitespace normalized.
    pub normalized: String,
    /// e.g. `ssh-ed25519`, `ecdsa-sha2-nistp256`, `sk-ssh-ed25519@openssh.com`.
    pub key_type: String,
    /// As `ssh-keygen -l -E sha256` prints it: `SHA256:…`.
    pub fingerprint: String,
    pub comment: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("public_key is empty")]
    Empty,
    #[error("public_key is longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("public_key must be a single line")]
    MultiLine,
    #[error(
        "public_key is not an OpenSSH public key line (expected \"<type> <base64> [comment]\", e.g. the contents of ~/.ssh/id_ed25519.pub)"
    )]
    Unparseable,
    #[error(
        "{0} keys are not accepted; use ssh-ed25519, ECDSA, RSA of at least 2048 bits, or a FIDO sk- key"
    )]
    Forbidden(String),
    #[error(
        "RSA keys must have at least {MIN_RSA_BITS} bits (this one has {0}); generate one with `ssh-keygen -t ed25519`"
    )]
    RsaTooShort(u32),
    #[error("the key comment is longer than {MAX_COMMENT} bytes")]
    CommentTooLong,
}

/// Parses and checks one authorized_keys-style line.
pub fn parse_public_key(line: &str) -> Result<ParsedKey, KeyError> {
    if line.len() > MAX_LINE {
        return Err(KeyError::TooLong);
    }
    let line = line.trim();
    if line.is_empty() {
        return Err(KeyError::Empty);
    }
    if line.contains(['\n', '\r']) {
        return Err(KeyError::MultiLine);
    }
    // Refuse DSA by name: the parser does not know the type and would call it garbage.
    if line.split_whitespace().next() == Some("ssh-dss") {
        return Err(KeyError::Forbidden("DSA (ssh-dss)".into()));
    }
    let key = PublicKey::from_openssh(line).map_err(|_| KeyError::Unparseable)?;
    check_policy(&key)?;
    let comment = key.comment().to_string().trim().to_owned();
    if comment.len() > MAX_COMMENT {
        return Err(KeyError::CommentTooLong);
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let base = bare.to_openssh().map_err(|_| KeyError::Unparseable)?;
    let normalized = if comment.is_empty() {
        base.trim().to_owned()
    } else {
        format!("{} {}", base.trim(), comment)
    };
    Ok(ParsedKey {
        normalized,
        key_type: key.algorithm().as_str().to_owned(),
        fingerprint: fingerprint(&key),
        comment,
    })
}

/// The lookup key auth and the store share.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Which key types are allowed to identify a user, at upload and at login.
pub fn check_policy(key: &PublicKey) -> Result<(), KeyError> {
    match key.algorithm() {
        Algorithm::Ed25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256 => Ok(()),
        Algorithm::Rsa { .. } => match key.key_data() {
            KeyData::Rsa(rsa) => {
                let bits = rsa.key_size();
                if bits < MIN_RSA_BITS {
                    Err(KeyError::RsaTooShort(bits))
                } else {
                    Ok(())
                }
            }
            _ => Err(KeyError::Unparseable),
        },
        Algorithm::Dsa => Err(KeyError::Forbidden("DSA (ssh-dss)".into())),
        other => Err(KeyError::Forbidden(other.as_str().to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys generated with ssh-keygen for these tests; fingerprints from `ssh-keygen -l -E sha256`.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIux7Y/CL5HycGjcYjn8gjVaFq877yT1BKtBln/XMf+0  alice@laptop";
    const ED25519_FP: &str = "SHA256:nXA6PVrKbrVszVtEpklUq8XoCxq74IXDt19ppTrjT+Q";
    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCoW1n8CeyHvTXSAIyFSkFR410ViOIIXEKnizcfBO9PKFnxrtZ/76gI5O69lIQe8qBWjSCBUKVB5Kh6anpLVX8z5T15YssYDFsucXSvdW/aSjvaTSSim8/YsFVV6QbMBlrxeL05CIdI9Rd7TxuTZQ30crE0tval42JBdAuOIaEQVw== short";

    #[test]
    fn ed25519_is_normalized_and_fingerprinted() {
        let k = parse_public_key(&format!("  {ED25519}\n")).unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.fingerprint, ED25519_FP);
        assert_eq!(k.comment, "alice@laptop");
        assert!(k.normalized.starts_with("ssh-ed25519 AAAAC3"));
        assert!(k.normalized.ends_with(" alice@laptop"));
        assert!(!k.normalized.contains("  "));
    }

    #[test]
    fn short_rsa_is_refused_with_its_size() {
        assert_eq!(parse_public_key(RSA_1024), Err(KeyError::RsaTooShort(1024)));
    }

    #[test]
    fn garbage_is_unparseable() {
        assert_eq!(parse_public_key("hello world"), Err(KeyError::Unparseable));
        assert_eq!(parse_public_key(""), Err(KeyError::Empty));
        assert_eq!(
            parse_public_key("ssh-ed25519 !!!"),
            Err(KeyError::Unparseable)
        );
        assert_eq!(
            parse_public_key(&"A".repeat(MAX_LINE + 1)),
            Err(KeyError::TooLong)
        );
        assert_eq!(
            parse_public_key(&format!("{ED25519}\n{ED25519}")),
            Err(KeyError::MultiLine)
        );
    }
}
