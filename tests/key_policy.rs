//! Keys no one should trust: refused by the key API with a message that says what is
//! wrong, and refused at login even when an old database already holds them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use reqwest::StatusCode;
use russh::keys::{Algorithm, PublicKey};
use serde_json::{Value, json};
use ssh_gateway::control::Principal;
use ssh_gateway::keys::{ParsedKey, fingerprint};
use ssh_gateway::ssh::auth::{KeyStore, Refusal, authenticate};
use ssh_gateway::store::{NewKey, Store};
use support::{Gateway, keygen};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The ed25519 identity point: with it as a public key, any signature verifies.
const IDENTITY: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

/// An authorized_keys line around a wire blob of SSH strings.
fn line(kind: &str, fields: &[&[u8]]) -> String {
    let mut blob = Vec::new();
    for field in std::iter::once(&kind.as_bytes()).chain(fields) {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!("{kind} {} crafted@test", B64.encode(blob))
}

/// The strings after the type in a real key's blob.
fn fields(line: &str) -> Vec<Vec<u8>> {
    let blob = B64.decode(line.split_whitespace().nth(1).unwrap()).unwrap();
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

async fn add_key(gw: &Gateway, name: &str, public_key: &str) -> (StatusCode, Value) {
    let resp = support::http()
        .post(format!("{}/users/me/ssh-keys", gw.api))
        .bearer_auth(&gw.token)
        .json(&json!({"name": name, "public_key": public_key}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_api_refuses_keys_no_one_should_trust() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]).public_line;
    let p256 = keygen(dir.path(), "p256", &["-t", "ecdsa", "-b", "256"]).public_line;
    let p384 = keygen(dir.path(), "p384", &["-t", "ecdsa", "-b", "384"]).public_line;
    let p521 = keygen(dir.path(), "p521", &["-t", "ecdsa", "-b", "521"]).public_line;
    let ed = keygen(dir.path(), "ed", &["-t", "ed25519"]).public_line;

    let rsa_n = fields(&rsa).remove(1);
    let mut rsa_even_n = rsa_n.clone();
    *rsa_even_n.last_mut().unwrap() &= !1;
    let off_curve = |good: &str| {
        let mut f = fields(good);
        *f[1].last_mut().unwrap() ^= 1;
        line(good.split(' ').next().unwrap(), &[&f[0], &f[1]])
    };
    let infinity = line("ecdsa-sha2-nistp256", &[b"nistp256", &[0x00]]);
    // y = 2 is the y of no point on the curve.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let order_8 = {
        let mut p = [0u8; 32];
        let hex = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05";
        for (i, b) in p.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        p
    };

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "identity",
            line("ssh-ed25519", &[&IDENTITY]),
            "this ssh-ed25519 key is a small-order point: any signature would verify; generate a new key with `ssh-keygen -t ed25519`",
        ),
        (
            "order 8",
            line("ssh-ed25519", &[&order_8]),
            "small-order point",
        ),
        (
            "sk identity",
            line("sk-ssh-ed25519@openssh.com", &[&IDENTITY, b"ssh:"]),
            "this sk-ssh-ed25519@openssh.com key is a small-order point",
        ),
        (
            "not a point",
            line("ssh-ed25519", &[&not_a_point]),
            "not a point on the ed25519 curve",
        ),
        (
            "rsa e=1",
            line("ssh-rsa", &[&[1], &rsa_n]),
            "public exponent is 1: with e = 1 any signature would verify",
        ),
        (
            "rsa even e",
            line("ssh-rsa", &[&[1, 0, 0], &rsa_n]),
            "public exponent is even",
        ),
        (
            "rsa even n",
            line("ssh-rsa", &[&[1, 0, 1], &rsa_even_n]),
            "modulus is even",
        ),
        (
            "p256 off curve",
            off_curve(&p256),
            "not a point on its curve",
        ),
        (
            "p384 off curve",
            off_curve(&p384),
            "not a point on its curve",
        ),
        (
            "p521 off curve",
            off_curve(&p521),
            "not a point on its curve",
        ),
        (
            "p256 infinity",
            infinity,
            "this ecdsa-sha2-nistp256 key is the point at infinity",
        ),
    ];
    for (name, key, expect) in cases {
        let (status, body) = add_key(&gw, name, &key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{name}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expect), "{name}: {message}");
    }

    // The real keys those were made from are fine.
    for (name, key) in [("rsa", &rsa), ("p256", &p256), ("ed", &ed)] {
        let (status, body) = add_key(&gw, name, key).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_and_comments_with_control_or_bidi_characters_are_refused() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", &["-t", "ed25519"]).public_line;
    let bare = key.rsplit_once(' ').unwrap().0;

    for name in [
        "lap\u{1b}[31mtop",
        "a\u{7f}",
        "a\u{85}b",
        "txt.\u{202e}exe",
        "a\u{2067}b",
    ] {
        let (status, body) = add_key(&gw, name, &key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("name contains U+"),
            "{name:?}: {message}"
        );
    }
    for comment in ["me\u{1b}]0;pwned\u{7}", "me\u{9b}2J", "gpj.\u{202e}exe"] {
        let (status, body) = add_key(&gw, "laptop", &format!("{bare} {comment}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{comment:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("the key comment contains U+"),
            "{comment:?}: {message}"
        );
    }
    // Nothing was stored, and a plain name and comment still work.
    let (status, body) = add_key(&gw, "Zoë’s laptop", &key).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A key store that vouches for every fingerprint (answering with the victim's real
/// key's owner): only the policy stands between a bad key and a login, and the store
/// must not even be asked.
struct TrustsEveryone {
    store: Store,
    victims_key: String,
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl KeyStore for TrustsEveryone {
    async fn principal_for(&self, _fingerprint: &str) -> Result<Option<Principal>, String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.store.principal_for(&self.victims_key).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_order_key_already_in_the_store_cannot_log_in() {
    let identity = PublicKey::from_openssh(&line("ssh-ed25519", &[&IDENTITY])).unwrap();
    let sk_identity =
        PublicKey::from_openssh(&line("sk-ssh-ed25519@openssh.com", &[&IDENTITY, b"ssh:"]))
            .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    let store = Store::open(&url, 1).await.unwrap();
    let user = store.create_user("victim").await.unwrap();
    let real = keygen(dir.path(), "real", &["-t", "ed25519"]).public_line;
    let parsed = ssh_gateway::keys::parse_public_key(&real).unwrap();
    store
        .add_key(NewKey {
            user_id: &user.id,
            name: "real",
            key: &parsed,
        })
        .await
        .unwrap();
    let trusting = TrustsEveryone {
        store: store.clone(),
        victims_key: parsed.fingerprint.clone(),
        asked: AtomicUsize::new(0),
    };
    for (key, algorithm) in [
        (&identity, Algorithm::Ed25519),
        (&sk_identity, Algorithm::SkEd25519),
    ] {
        let refusal = authenticate(&trusting, key, &algorithm).await.unwrap_err();
        let Refusal::Policy(message) = refusal else {
            panic!("refused for the wrong reason: {refusal:?}");
        };
        assert!(message.contains("small-order point"), "{message}");
    }
    assert_eq!(
        trusting.asked.load(Ordering::SeqCst),
        0,
        "the store was asked"
    );

    // The same store lets a real key in, so the refusal above is the policy's.
    let real = PublicKey::from_openssh(&real).unwrap();
    let principal = authenticate(&trusting, &real, &Algorithm::Ed25519).await;
    assert_eq!(principal.unwrap().user_name(), "victim");

    // A database written before the policy existed: the row is there, straight from
    // an insert that never saw the API, and still opens nothing.
    let old_row = ParsedKey {
        normalized: line("ssh-ed25519", &[&IDENTITY]),
        key_type: "ssh-ed25519".into(),
        fingerprint: fingerprint(&identity),
        comment: String::new(),
    };
    store
        .add_key(NewKey {
            user_id: &user.id,
            name: "from 2024",
            key: &old_row,
        })
        .await
        .unwrap();
    let stored: Arc<dyn KeyStore> = Arc::new(store.clone());
    assert!(
        stored
            .principal_for(&fingerprint(&identity))
            .await
            .unwrap()
            .is_some(),
        "the store holds the key"
    );
    let refusal = authenticate(stored.as_ref(), &identity, &Algorithm::Ed25519)
        .await
        .unwrap_err();
    assert!(matches!(refusal, Refusal::Policy(_)), "{refusal:?}");
    store.close().await;
}
