//! User certificates as a client presents them at login: `certs::check` returns
//! without panicking, and what it accepts is exactly what sshd would: a user
//! certificate from a trusted CA with a verifying signature, inside its validity
//! window, naming one principal, with no critical option but a `source-address` that
//! includes the client; its claims are the certificate's own.
//!
//! Input: a first byte of 0 decodes the rest as a certificate in wire form (what
//! russh hands over); any other first byte drives a certificate built and signed
//! here from fuzzed fields (signer, type, window, principals, options, extensions,
//! key id) and a fuzzed time and client address, so the checks past the signature
//! are reached.
#![no_main]

#[path = "../../src/conn/limits.rs"]
#[allow(dead_code)]
mod limits;

/// `crate::conn::admission::IpNet`, where check.rs finds it in the gateway.
mod conn {
    pub mod admission {
        pub use crate::limits::IpNet;
    }
}

#[path = "../../src/certs/permits.rs"]
#[allow(dead_code)]
mod permits;

// check.rs finds these as `super::…`: here the crate root, in the gateway `certs`.
#[allow(unused_imports)]
use permits::*;

#[path = "../../src/certs/check.rs"]
#[allow(dead_code)]
mod check;

use std::net::IpAddr;
use std::sync::LazyLock;

use check::{CertRefusal, Issuer, Trust, check};
use libfuzzer_sys::fuzz_target;
use russh::keys::HashAlg;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{Certificate, PrivateKey};

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// The gateway's own CA, a configured CA, a CA nobody trusts, and the user's key.
static OWN: LazyLock<PrivateKey> = LazyLock::new(|| key(1));
static EXTERNAL: LazyLock<PrivateKey> = LazyLock::new(|| key(2));
static STRANGER: LazyLock<PrivateKey> = LazyLock::new(|| key(3));
static SUBJECT: LazyLock<PrivateKey> = LazyLock::new(|| key(4));

fn trust() -> Trust {
    Trust {
        own: Some(OWN.public_key().key_data().clone()),
        external: vec![EXTERNAL.public_key().key_data().clone()],
    }
}

/// Takes fields off the front of the input; runs dry as zeros and empty strings.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| n << 8 | u64::from(self.byte()))
    }
    fn text(&mut self) -> String {
        let len = usize::from(self.byte() % 48).min(self.0.len());
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(text).into_owned()
    }
    /// A name, usually one the gateway knows about.
    fn name(&mut self, known: &[&str]) -> String {
        match usize::from(self.byte()) {
            i if i < known.len() * 8 => known[i % known.len()].to_owned(),
            _ => self.text(),
        }
    }
}

fn build(f: &mut Fields) -> Option<(Certificate, u64, IpAddr)> {
    let signer: &PrivateKey = match f.byte() % 3 {
        0 => &OWN,
        1 => &EXTERNAL,
        _ => &STRANGER,
    };
    // Windows near a fuzzed "now", so each side of both bounds is reached.
    let now = f.u64() >> 2;
    let valid_after = now.saturating_add_signed(i64::from(f.byte() as i8));
    let valid_before = valid_after.saturating_add(u64::from(f.byte()));
    let mut b = Builder::new(
        [0u8; 16],
        SUBJECT.public_key().key_data().clone(),
        valid_after,
        valid_before,
    )
    .ok()?;
    b.serial(f.u64()).ok()?;
    b.cert_type(if f.byte() % 4 == 0 {
        CertType::Host
    } else {
        CertType::User
    })
    .ok()?;
    b.key_id(f.text()).ok()?;
    match f.byte() % 4 {
        0 => {
            b.all_principals_valid().ok()?;
        }
        n => {
            for _ in 0..n {
                b.valid_principal(f.name(&["alice", "bob", ""])).ok()?;
            }
        }
    }
    for _ in 0..f.byte() % 3 {
        let value = match f.byte() % 4 {
            0 => "127.0.0.1/32".to_owned(),
            1 => "10.0.0.0/8,::1".to_owned(),
            2 => "0.0.0.0/0".to_owned(),
            _ => f.text(),
        };
        b.critical_option(
            f.name(&["source-address", "force-command", "verify-required"]),
            value,
        )
        .ok()?;
    }
    for _ in 0..f.byte() % 4 {
        let known = [
            "permit-pty",
            "permit-port-forwarding",
            "permit-agent-forwarding",
            "permit-user-rc",
        ];
        b.extension(f.name(&known), "").ok()?;
    }
    let client = if f.byte() % 2 == 0 {
        IpAddr::from([f.byte(), f.byte(), f.byte(), f.byte()])
    } else {
        IpAddr::from(std::array::from_fn::<u8, 16, _>(|_| f.byte()))
    };
    let cert = b.sign(signer).ok()?;
    Some((cert, now, client))
}

fuzz_target!(|data: &[u8]| {
    let trust = trust();
    let (cert, now, client, built) = match data {
        [0, wire @ ..] => match Certificate::from_bytes(wire) {
            Ok(cert) => (cert, 1_700_000_000, IpAddr::from([127, 0, 0, 1]), false),
            Err(_) => return,
        },
        [_, rest @ ..] => match build(&mut Fields(rest)) {
            Some((cert, now, client)) => (cert, now, client, true),
            None => return,
        },
        [] => return,
    };
    let verdict = check(&cert, now, client, &trust);

    // The wire form decodes to the same certificate and the same verdict.
    if let Ok(bytes) = cert.to_bytes() {
        let again = Certificate::from_bytes(&bytes).expect("an encoded certificate decodes");
        assert_eq!(check(&again, now, client, &trust), verdict);
    }
    if cert.signature_key() == STRANGER.public_key().key_data() {
        assert!(verdict.is_err(), "{verdict:?}");
        if cert.cert_type() == CertType::User {
            assert!(
                matches!(verdict, Err(CertRefusal::UntrustedCa(_))),
                "{verdict:?}"
            );
        }
    }
    let Ok(claims) = verdict else { return };
    assert_eq!(cert.cert_type(), CertType::User);
    assert!(cert.verify_signature().is_ok());
    assert!(
        cert.valid_after() <= now && now < cert.valid_before(),
        "{cert:?} at {now}"
    );
    assert_eq!(cert.valid_principals(), [claims.principal.clone()]);
    assert_eq!(claims.serial, cert.serial());
    let own = cert.signature_key() == OWN.public_key().key_data();
    assert_eq!(claims.issuer == Issuer::Own, own);
    for (name, list) in cert.critical_options().iter() {
        assert_eq!(name, "source-address", "accepted with {name:?}");
        let nets = check::parse_source_address(list).expect("a list that was honoured parses");
        let v4 = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
            v4 => v4,
        };
        assert!(
            nets.iter().any(|n| n.contains(v4)),
            "{client} not in {list:?}"
        );
    }
    let ext = cert.extensions();
    assert_eq!(claims.permits.pty, ext.contains_key("permit-pty"));
    assert_eq!(
        claims.permits.port_forwarding,
        ext.contains_key("permit-port-forwarding")
    );
    assert_eq!(
        claims.permits.agent_forwarding,
        ext.contains_key("permit-agent-forwarding")
    );
    assert!(claims.key_id.chars().count() <= 128);
    if built {
        let subject = SUBJECT
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        assert_eq!(claims.key_fingerprint, subject);
    }
});
