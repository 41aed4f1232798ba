//! Public keys users upload: parse one authorized_keys line, enforce the key policy, and
//! produce the normalized form the store keeps and the fingerprint auth looks keys up by.
//!
//! The policy is more than a list of algorithms: a public key is only as good as the
//! point or modulus inside it, and a few values make every signature verify (the
//! ed25519 identity point, an RSA exponent of 1). The same check runs at upload and at
//! every login, so a key stored before the check existed is refused too.
//!
//! The fuzz target fuzz/fuzz_targets/keys.rs compiles this file alone: it may use
//! ssh-key (through russh::keys), the curve crates and thiserror, nothing else.

use std::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;
use russh::keys::ssh_key::public::{EcdsaPublicKey, KeyData, RsaPublicKey};
use russh::keys::{Algorithm, HashAlg, PublicKey};

/// Longest line accepted; an RSA 8192-bit key is ~1.4 KiB, certificates and options
/// are not accepted here.
const MAX_LINE: usize = 16 * 1024;
const MIN_RSA_BITS: u32 = 2048;
/// The largest modulus the login path can verify: russh checks signatures with the
/// `rsa` crate, which refuses moduli over 8192 bits. A larger key would upload fine
/// and then fail every login without a word.
const MAX_RSA_BITS: u32 = 8192;
/// Likewise the `rsa` crate's bound on the public exponent (2^33 - 1).
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;
const MAX_COMMENT: usize = 1024;
const MAX_NAME: usize = 128;
const NEW_KEY_HINT: &str = "generate a new key with `ssh-keygen -t ed25519`";

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

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    #[error(
        "RSA keys may have at most {MAX_RSA_BITS} bits, the largest this gateway can verify (this one has {0}); {NEW_KEY_HINT}"
    )]
    RsaTooLong(u32),
    #[error(
        "this RSA key's modulus is even, so it is trivially factored and anyone could sign with it; {NEW_KEY_HINT}"
    )]
    RsaEvenModulus,
    #[error("this RSA key's public exponent is even, which no working RSA key has; {NEW_KEY_HINT}")]
    RsaEvenExponent,
    #[error(
        "this RSA key's public exponent is {0}: with e = 1 any signature would verify, and RSA needs e >= 3; {NEW_KEY_HINT}"
    )]
    RsaExponentTooSmall(u64),
    #[error(
        "this RSA key's public exponent is larger than 2^33-1, which this gateway cannot verify (ssh-keygen uses 65537); {NEW_KEY_HINT}"
    )]
    RsaExponentTooLarge,
    #[error("this {0} key is a small-order point: any signature would verify; {NEW_KEY_HINT}")]
    Ed25519SmallOrder(String),
    #[error("this {0} key is not a point on the ed25519 curve; {NEW_KEY_HINT}")]
    Ed25519Undecodable(String),
    #[error(
        "this {0} key uses a non-canonical point encoding, which ssh-keygen never writes; {NEW_KEY_HINT}"
    )]
    Ed25519NonCanonical(String),
    #[error(
        "this {0} key has a small-order component (it is outside the prime-order subgroup every real key is in); {NEW_KEY_HINT}"
    )]
    Ed25519Torsion(String),
    #[error("this {0} key is not a point on its curve; {NEW_KEY_HINT}")]
    EcdsaNotOnCurve(String),
    #[error("this {0} key is the point at infinity, which is not a public key; {NEW_KEY_HINT}")]
    EcdsaInfinity(String),
    #[error(
        "this {0} key uses a compressed point; upload it in the uncompressed form ssh-keygen writes (a second encoding would give one key two fingerprints)"
    )]
    EcdsaCompressed(String),
    #[error("the key comment is longer than {MAX_COMMENT} bytes")]
    CommentTooLong,
    #[error("the key comment contains {0}; remove it from the end of the public key line")]
    CommentCharacter(BadChar),
    #[error("name must be 1-{MAX_NAME} bytes")]
    NameLength,
    #[error("name contains {0}; use printable characters only")]
    NameCharacter(BadChar),
}

/// A character refused in a key name or comment, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChar {
    pub ch: char,
    /// Counted in characters from 1, as a person would count.
    pub position: usize,
}

impl fmt::Display for BadChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.ch.is_control() {
            "a control character"
        } else if is_bidi_control(self.ch) {
            "a bidirectional-text control"
        } else {
            "a line or paragraph separator"
        };
        write!(
            f,
            "U+{:04X} ({kind}) at character {}",
            self.ch as u32, self.position
        )
    }
}

/// Characters that change how text around them is shown: C0, DEL and C1 controls (a
/// terminal runs escape sequences), bidirectional overrides, embeddings, isolates and
/// marks (text displays in a different order than it is stored, the "Trojan Source"
/// trick), and the Unicode line and paragraph separators (a fake new log line).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

fn first_unsafe_char(s: &str) -> Option<BadChar> {
    s.chars()
        .enumerate()
        .find(|(_, c)| is_unsafe_char(*c))
        .map(|(i, ch)| BadChar {
            ch,
            position: i + 1,
        })
}

/// Text for logs and terminals: unsafe characters (see [`is_unsafe_char`]) become
/// `\u{…}` and backslashes are doubled, so what is printed cannot rewrite the line it
/// is on and the original stays recoverable. Names and comments are refused with such
/// characters on the way in; this covers file names, paths and rows written before.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if is_unsafe_char(c) {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// [`Escaped`] as a `String`.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

/// Checks a key's display name (the API's `name`), returning it trimmed.
pub fn check_key_name(name: &str) -> Result<&str, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(KeyError::NameLength);
    }
    match first_unsafe_char(name) {
        Some(bad) => Err(KeyError::NameCharacter(bad)),
        None => Ok(name),
    }
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
    let key = PublicKey::from_openssh(line).map_err(|_| diagnose_unparseable(line))?;
    check_policy(&key)?;
    let comment = key.comment().to_string().trim().to_owned();
    if comment.len() > MAX_COMMENT {
        return Err(KeyError::CommentTooLong);
    }
    if let Some(bad) = first_unsafe_char(&comment) {
        return Err(KeyError::CommentCharacter(bad));
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

/// Which keys may identify a user, at upload and at login: the algorithm, and the
/// key material itself.
pub fn check_policy(key: &PublicKey) -> Result<(), KeyError> {
    let kind = || key.algorithm().as_str().to_owned();
    match key.key_data() {
        KeyData::Ed25519(point) => check_ed25519(&point.0, kind),
        KeyData::SkEd25519(sk) => check_ed25519(&sk.public_key().0, kind),
        KeyData::Ecdsa(point) => check_ecdsa(point, kind),
        KeyData::SkEcdsaSha2NistP256(sk) => check_sec1(sk.ec_point().as_bytes(), on_p256, kind),
        KeyData::Rsa(rsa) => check_rsa(rsa),
        _ => match key.algorithm() {
            Algorithm::Dsa => Err(KeyError::Forbidden("DSA (ssh-dss)".into())),
            other => Err(KeyError::Forbidden(other.as_str().to_owned())),
        },
    }
}

/// Small-order points (the identity among them) make every signature verify under
/// the cofactored and the plain verification equation alike; the rest would never
/// come out of ssh-keygen and have no honest use.
fn check_ed25519(bytes: &[u8; 32], kind: impl Fn() -> String) -> Result<(), KeyError> {
    let compressed = CompressedEdwardsY(*bytes);
    let Some(point) = compressed.decompress() else {
        return Err(KeyError::Ed25519Undecodable(kind()));
    };
    if point.is_small_order() {
        return Err(KeyError::Ed25519SmallOrder(kind()));
    }
    // The decoder reduces y modulo p and accepts a sign bit on x = 0; re-encoding
    // shows whether these bytes were the one canonical spelling of the point.
    if point.compress() != compressed {
        return Err(KeyError::Ed25519NonCanonical(kind()));
    }
    if !point.is_torsion_free() {
        return Err(KeyError::Ed25519Torsion(kind()));
    }
    Ok(())
}

fn check_ecdsa(point: &EcdsaPublicKey, kind: impl Fn() -> String) -> Result<(), KeyError> {
    match point {
        EcdsaPublicKey::NistP256(p) => check_sec1(p.as_bytes(), on_p256, kind),
        EcdsaPublicKey::NistP384(p) => check_sec1(p.as_bytes(), on_p384, kind),
        EcdsaPublicKey::NistP521(p) => check_sec1(p.as_bytes(), on_p521, kind),
    }
}

// Decoding checks the coordinates are field elements that satisfy the curve equation
// (and refuses the identity): an off-curve point is never what ssh-keygen wrote, and
// invalid-curve points are the classic way to make ECDSA code misbehave.
fn on_p256(sec1: &[u8]) -> bool {
    p256::PublicKey::from_sec1_bytes(sec1).is_ok()
}
fn on_p384(sec1: &[u8]) -> bool {
    p384::PublicKey::from_sec1_bytes(sec1).is_ok()
}
fn on_p521(sec1: &[u8]) -> bool {
    p521::PublicKey::from_sec1_bytes(sec1).is_ok()
}

/// SEC1 tags: 0x00 the point at infinity, 0x02/0x03 compressed, 0x04 uncompressed.
fn check_sec1(
    bytes: &[u8],
    on_curve: fn(&[u8]) -> bool,
    kind: impl Fn() -> String,
) -> Result<(), KeyError> {
    match bytes.first() {
        None | Some(0x00) => Err(KeyError::EcdsaInfinity(kind())),
        Some(0x02 | 0x03) => Err(KeyError::EcdsaCompressed(kind())),
        _ if !on_curve(bytes) => Err(KeyError::EcdsaNotOnCurve(kind())),
        _ => Ok(()),
    }
}

fn check_rsa(rsa: &RsaPublicKey) -> Result<(), KeyError> {
    // The parser only guarantees both numbers are positive.
    let n = significant(rsa.n().as_positive_bytes().unwrap_or_default());
    let e = significant(rsa.e().as_positive_bytes().unwrap_or_default());
    let bits = bit_length(n);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooShort(bits));
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::RsaTooLong(bits));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(KeyError::RsaEvenModulus);
    }
    if e.len() > 8 {
        return Err(KeyError::RsaExponentTooLarge);
    }
    let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if e > MAX_RSA_EXPONENT {
        return Err(KeyError::RsaExponentTooLarge);
    }
    if e < 3 {
        return Err(KeyError::RsaExponentTooSmall(e));
    }
    if e & 1 == 0 {
        return Err(KeyError::RsaEvenExponent);
    }
    Ok(())
}

/// Big-endian bytes without leading zeros.
fn significant(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[zeros..]
}

/// Bits in a big-endian number without leading zero bytes (a 2047-bit modulus is
/// 256 bytes long but is not a 2048-bit key).
fn bit_length(bytes: &[u8]) -> u32 {
    match bytes.first() {
        None => 0,
        Some(first) => {
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX / 8);
            (len - 1).saturating_mul(8) + (8 - first.leading_zeros())
        }
    }
}

/// The parser says only "invalid"; one case deserves a precise answer: an ECDSA key
/// whose point is the SEC1 point at infinity (a lone 0x00), which the parser refuses
/// before the policy can name it.
fn diagnose_unparseable(line: &str) -> KeyError {
    use base64::Engine;
    let mut fields = line.split_whitespace();
    let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
        return KeyError::Unparseable;
    };
    // Only names we know: the message repeats the type, and it must not repeat
    // arbitrary text from the line.
    const ECDSA: [&str; 4] = [
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let Some(kind) = ECDSA.into_iter().find(|known| *known == kind) else {
        return KeyError::Unparseable;
    };
    let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(data) else {
        return KeyError::Unparseable;
    };
    let mut rest = blob.as_slice();
    let mut next = || -> Option<&[u8]> {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let field = rest.get(4..4usize.checked_add(len)?)?;
        rest = &rest[4 + len..];
        Some(field)
    };
    let (Some(wire_kind), Some(_curve), Some(point)) = (next(), next(), next()) else {
        return KeyError::Unparseable;
    };
    if wire_kind == kind.as_bytes() && matches!(point, [] | [0x00]) {
        KeyError::EcdsaInfinity(kind.to_owned())
    } else {
        KeyError::Unparseable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys generated with ssh-keygen for these tests; fingerprints from `ssh-keygen -l -E sha256`.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIux7Y/CL5HycGjcYjn8gjVaFq877yT1BKtBln/XMf+0  alice@laptop";
    const ED25519_FP: &str = "SHA256:nXA6PVrKbrVszVtEpklUq8XoCxq74IXDt19ppTrjT+Q";
    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCoW1n8CeyHvTXSAIyFSkFR410ViOIIXEKnizcfBO9PKFnxrtZ/76gI5O69lIQe8qBWjSCBUKVB5Kh6anpLVX8z5T15YssYDFsucXSvdW/aSjvaTSSim8/YsFVV6QbMBlrxeL05CIdI9Rd7TxuTZQ30crE0tval42JBdAuOIaEQVw== short";
    const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDZpoQiMaZ7ccsNFHq7rBzDbBenHNZkSXEF2aCltCRuJ0Ght7Hc/OvcCwRP3PHrPQnAXznS/tf6vTqX4xqIaM96qRa9FZ7IXQh6ThUPns5FybOb7LGeoK3DJ8cvJB9D25xlUIzjmoeEz7AOvO9w04NhArFRTlxJwEoeN2XdH9B+yUO60+1P933YkoLfCEpT12/qL5QsRcLmyFBFItiSc3kJAavKW6f07CXKdV6OBB5ZQP9V+JFzo/AeN3jx6lUYOSEwXTJXVnx6Ve23zWmU+GLGKwRH/F8b0hfUrxmkFksFU5FNtC4OupSi+Q3jmj9jBVutwheroC+sCItXmYrLpfkL rsa@test";
    const P256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHLA4jwYfs1dHOXzgwUeTeeyJyPLtyWq9GZI4BSi1wzmFAqjiU1GJU/o6yg28HAMKZLd6RMJwlQGESx931qH5nY= t";
    const P384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBNVW43Px7IMLCs6tr89ZTobN134R83X4UG8bJGzKaDx0CW3NK6hawywYA3qRzCVq9ohHydOLifeqIa/FPOkD0UBOsT6+5WzlOJNrnhcdQseg67FZBLemmOEXxCcIbkbA6Q== t";
    const P521: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAFltS5Km6d3hmTieM3fDSPm8yiHWTGD6bkf5pLbR2ySgI3AHtdDQoYGnybC0h4TcfwmINl4ukHt33Etg+zt1+PDWQBrxXuR/UlvTYxKmiffQFV51fgJma7Tcq82tvxyPwffHL6Lg5lHKDI18S9SO/y8p6+wCFic5NgUARDKpiclKVkX1A== t";

    /// The eight points of order dividing 8 on edwards25519, canonically encoded: the
    /// identity, the point of order 2, two of order 4 and four of order 8.
    const TORSION: [&str; 8] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An authorized_keys line around a wire blob of SSH strings.
    fn line(kind: &str, fields: &[&[u8]]) -> String {
        use base64::Engine;
        let mut blob = Vec::new();
        for field in std::iter::once(&kind.as_bytes()).chain(fields) {
            blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
            blob.extend_from_slice(field);
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        format!("{kind} {b64} crafted")
    }

    /// The strings after the type in a real key's blob.
    fn fields(line: &str) -> Vec<Vec<u8>> {
        use base64::Engine;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(line.split_whitespace().nth(1).unwrap())
            .unwrap();
        let mut rest = &blob[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(rest[4..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        out.remove(0);
        out
    }

    fn ed25519(point: &[u8]) -> String {
        line("ssh-ed25519", &[point])
    }

    fn sk_ed25519(point: &[u8]) -> String {
        line("sk-ssh-ed25519@openssh.com", &[point, b"ssh:"])
    }

    /// An SSH mpint: big-endian, with a zero byte in front when the top bit is set.
    fn mpint(bytes: &[u8]) -> Vec<u8> {
        let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
        let mut out = Vec::new();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            out.push(0);
        }
        out.extend_from_slice(bytes);
        out
    }

    /// An RSA line with modulus of exactly `bits` bits (top bit set, low bit as asked).
    fn rsa(e: &[u8], bits: usize, odd: bool) -> String {
        let mut n = vec![0x5au8; bits.div_ceil(8)];
        let top = (bits - 1) % 8;
        n[0] = (n[0] | (1 << top)) & (((1u16 << (top + 1)) - 1) as u8);
        let last = n.len() - 1;
        n[last] = if odd { n[last] | 1 } else { n[last] & !1 };
        line("ssh-rsa", &[&mpint(e), &mpint(&n)])
    }

    /// Both places the policy runs: upload (the whole line) and login (the key russh
    /// parsed from the client, which carries no comment).
    fn refused(line: &str) -> KeyError {
        let at_upload = parse_public_key(line).expect_err(line);
        if let Ok(key) = PublicKey::from_openssh(line) {
            assert_eq!(check_policy(&key), Err(at_upload.clone()), "{line}");
        }
        at_upload
    }

    #[test]
    fn keys_from_ssh_keygen_pass_the_policy() {
        for good in [ED25519, RSA_2048, P256, P384, P521] {
            let parsed = parse_public_key(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(parsed.key_type, good.split_whitespace().next().unwrap());
        }
        let point = fields(ED25519).remove(0);
        assert!(parse_public_key(&sk_ed25519(&point)).is_ok());
        let ec = fields(P256).remove(1);
        let sk_ec = line(
            "sk-ecdsa-sha2-nistp256@openssh.com",
            &[b"nistp256", &ec, b"ssh:"],
        );
        assert!(parse_public_key(&sk_ec).is_ok());
    }

    #[test]
    fn every_small_order_ed25519_point_is_refused() {
        // The canonical encodings, and two non-canonical spellings of the identity
        // (y = p + 1; x = 0 with the sign bit set), which decode to it all the same.
        let mut points: Vec<Vec<u8>> = TORSION.iter().map(|t| hex(t)).collect();
        points.push(hex(
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ));
        points.push(hex(
            "0100000000000000000000000000000000000000000000000000000000000080",
        ));
        for point in &points {
            for line in [ed25519(point), sk_ed25519(point)] {
                let kind = line.split(' ').next().unwrap().to_owned();
                assert_eq!(refused(&line), KeyError::Ed25519SmallOrder(kind), "{line}");
            }
        }
        let message = refused(&ed25519(&points[0])).to_string();
        assert!(
            message.contains("small-order point: any signature would verify"),
            "{message}"
        );
        assert!(message.contains("ssh-keygen -t ed25519"), "{message}");
    }

    #[test]
    fn undecodable_non_canonical_and_mixed_order_ed25519_are_refused() {
        let kind = || "ssh-ed25519".to_owned();
        // y = 2: (y² - 1) / (d y² + 1) has no square root, so no point has it.
        let mut y2 = [0u8; 32];
        y2[0] = 2;
        assert_eq!(refused(&ed25519(&y2)), KeyError::Ed25519Undecodable(kind()));
        // y = p + 3 spells the point with y = 3, whose canonical encoding is 03 00…
        let p_plus_3 = hex("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
        assert_eq!(
            refused(&ed25519(&p_plus_3)),
            KeyError::Ed25519NonCanonical(kind())
        );
        // ED25519's point plus a point of order 8: large order, but not in the
        // prime-order subgroup.
        let mixed = hex("b3167193b75c3ced4470042cbcca296154e51a3b82b91b8972c4149bb2717fe4");
        assert_eq!(refused(&ed25519(&mixed)), KeyError::Ed25519Torsion(kind()));
        assert_eq!(
            refused(&sk_ed25519(&mixed)),
            KeyError::Ed25519Torsion("sk-ssh-ed25519@openssh.com".into())
        );
    }

    #[test]
    fn trivial_and_malformed_rsa_keys_are_refused() {
        let f4 = [0x01, 0x00, 0x01];
        assert!(parse_public_key(&rsa(&f4, 2048, true)).is_ok());
        assert!(parse_public_key(&rsa(&f4, 8192, true)).is_ok());
        assert!(parse_public_key(&rsa(&[3], 4096, true)).is_ok());
        assert_eq!(
            refused(&rsa(&[1], 2048, true)),
            KeyError::RsaExponentTooSmall(1)
        );
        assert_eq!(
            refused(&rsa(&[2], 2048, true)),
            KeyError::RsaExponentTooSmall(2)
        );
        assert_eq!(refused(&rsa(&[4], 2048, true)), KeyError::RsaEvenExponent);
        assert_eq!(
            refused(&rsa(&[1, 0, 0], 2048, true)),
            KeyError::RsaEvenExponent
        );
        assert_eq!(
            refused(&rsa(&[2, 0, 0, 0, 1], 2048, true)),
            KeyError::RsaExponentTooLarge
        );
        assert_eq!(
            refused(&rsa(&[1; 9], 2048, true)),
            KeyError::RsaExponentTooLarge
        );
        assert_eq!(refused(&rsa(&f4, 2048, false)), KeyError::RsaEvenModulus);
        // 256 bytes long but 2041 bits: the byte length is not the key size.
        assert_eq!(refused(&rsa(&f4, 2041, true)), KeyError::RsaTooShort(2041));
        assert_eq!(refused(&rsa(&f4, 8200, true)), KeyError::RsaTooLong(8200));
        assert_eq!(refused(RSA_1024), KeyError::RsaTooShort(1024));
        let message = refused(&rsa(&[1], 2048, true)).to_string();
        assert!(message.contains("any signature would verify"), "{message}");
    }

    #[test]
    fn off_curve_infinity_and_compressed_ecdsa_points_are_refused() {
        for (good, curve) in [(P256, "nistp256"), (P384, "nistp384"), (P521, "nistp521")] {
            let kind = good.split(' ').next().unwrap();
            let point = fields(good).remove(1);
            let mut off_curve = point.clone();
            *off_curve.last_mut().unwrap() ^= 1;
            assert_eq!(
                refused(&line(kind, &[curve.as_bytes(), &off_curve])),
                KeyError::EcdsaNotOnCurve(kind.into()),
                "{kind}"
            );
            // The x coordinate is fine; only the form is refused.
            let coordinate = (point.len() - 1) / 2;
            let mut compressed = vec![0x02 | (point[point.len() - 1] & 1)];
            compressed.extend_from_slice(&point[1..=coordinate]);
            assert_eq!(
                refused(&line(kind, &[curve.as_bytes(), &compressed])),
                KeyError::EcdsaCompressed(kind.into()),
                "{kind}"
            );
            assert_eq!(
                refused(&line(kind, &[curve.as_bytes(), &[0x00]])),
                KeyError::EcdsaInfinity(kind.into()),
                "{kind}"
            );
        }
        let sk = "sk-ecdsa-sha2-nistp256@openssh.com";
        let mut off_curve = fields(P256).remove(1);
        off_curve[40] ^= 0x10;
        assert_eq!(
            refused(&line(sk, &[b"nistp256", &off_curve, b"ssh:"])),
            KeyError::EcdsaNotOnCurve(sk.into())
        );
    }

    #[test]
    fn comments_with_control_or_bidi_characters_are_refused() {
        let base = ED25519.rsplit_once(' ').unwrap().0.trim();
        for (comment, ch) in [
            ("me\u{1b}[2J", '\u{1b}'),
            ("me\u{7f}", '\u{7f}'),
            ("me\u{9b}31m", '\u{9b}'),
            ("evil\u{202e}gnp.txt", '\u{202e}'),
            ("a\u{2066}b", '\u{2066}'),
            ("a\u{2028}b", '\u{2028}'),
        ] {
            let err = parse_public_key(&format!("{base} {comment}")).unwrap_err();
            let KeyError::CommentCharacter(bad) = err else {
                panic!("{comment:?}: {err}");
            };
            assert_eq!(bad.ch, ch);
            assert!(
                err.to_string().contains(&format!("U+{:04X}", ch as u32)),
                "{err}"
            );
        }
        assert_eq!(
            parse_public_key(&format!("{base} Zoë’s laptop ✓"))
                .unwrap()
                .comment,
            "Zoë’s laptop ✓"
        );
    }

    #[test]
    fn key_names_refuse_control_and_bidi_characters() {
        assert_eq!(check_key_name("  laptop "), Ok("laptop"));
        assert_eq!(check_key_name("ноутбук 💻"), Ok("ноутбук 💻"));
        assert_eq!(check_key_name("  "), Err(KeyError::NameLength));
        assert_eq!(check_key_name(&"x".repeat(129)), Err(KeyError::NameLength));
        for bad in [
            '\u{0}', '\t', '\u{1b}', '\u{7f}', '\u{85}', '\u{202a}', '\u{202e}', '\u{2069}',
        ] {
            let name = format!("lap{bad}top");
            assert_eq!(
                check_key_name(&name),
                Err(KeyError::NameCharacter(BadChar {
                    ch: bad,
                    position: 4
                })),
                "{name:?}"
            );
        }
        let message = check_key_name("a\u{202e}b").unwrap_err().to_string();
        assert!(
            message.contains("U+202E (a bidirectional-text control) at character 2"),
            "{message}"
        );
    }

    #[test]
    fn escaping_keeps_text_on_its_line() {
        assert_eq!(escape("plain ✓"), "plain ✓");
        assert_eq!(
            escape("a\u{1b}[2Jb\\c\u{202e}d\ne"),
            "a\\u{1b}[2Jb\\\\c\\u{202e}d\\u{a}e"
        );
    }

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
