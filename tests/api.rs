//! The key API and sandbox API over real HTTP against a running gateway.

mod support;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Gateway, keygen};

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(gw: &Gateway) -> Self {
        Self {
            base: gw.api.clone(),
            client: support::http(),
        }
    }

    async fn add_key(&self, token: &str, name: &str, public_key: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}/users/me/ssh-keys", self.base))
            .bearer_auth(token)
            .json(&json!({"name": name, "public_key": public_key}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn ssh_keygen_fingerprint(pub_line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pub");
    std::fs::write(&path, format!("{pub_line}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// A FIDO key line: ssh-keygen needs a hardware token to make one, so build the wire
/// blob (type, key, application) around a software key's public part.
fn sk_key_line(kind: &str, inner_line: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let blob = engine
        .decode(inner_line.split_whitespace().nth(1).unwrap())
        .unwrap();
    let mut fields = Vec::new();
    let mut rest = &blob[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        fields.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    let put = |out: &mut Vec<u8>, field: &[u8]| {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    };
    let mut out = Vec::new();
    put(&mut out, kind.as_bytes());
    for field in &fields[1..] {
        put(&mut out, field);
    }
    put(&mut out, b"ssh:");
    format!("{kind} {} yubikey", engine.encode(out))
}

#[tokio::test(flavor = "multi_thread")]
async fn key_lifecycle_matches_ssh_keygen() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "laptop", &["-t", "ed25519"]);

    let (status, created) = api
        .add_key(&gw.token, "laptop", &format!("  {}  ", key.public_line))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "laptop");
    assert_eq!(created["key_type"], "ssh-ed25519");
    assert_eq!(created["public_key"], key.public_line.as_str());
    assert_eq!(created["comment"], "laptop@test");
    assert_eq!(
        created["fingerprint_sha256"],
        ssh_keygen_fingerprint(&key.public_line).as_str()
    );
    for field in ["id", "created_at", "updated_at"] {
        assert!(
            created[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} missing: {created}"
        );
    }
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, list) = api.get(Some(&gw.token), "/users/me/ssh-keys").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&created["id"].as_str().unwrap()));

    let url = format!(
        "{}/users/me/ssh-keys/{}",
        gw.api,
        created["id"].as_str().unwrap()
    );
    let resp = api
        .client
        .delete(&url)
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = api
        .client
        .delete(&url)
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_modern_key_type_is_accepted() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for (name, args) in [
        ("ecdsa256", &["-t", "ecdsa", "-b", "256"][..]),
        ("ecdsa384", &["-t", "ecdsa", "-b", "384"][..]),
        ("ecdsa521", &["-t", "ecdsa", "-b", "521"][..]),
        ("rsa2048", &["-t", "rsa", "-b", "2048"][..]),
    ] {
        lines.push((name.to_owned(), keygen(dir.path(), name, args).public_line));
    }
    let ed = keygen(dir.path(), "for-sk-ed", &["-t", "ed25519"]).public_line;
    let ec = keygen(dir.path(), "for-sk-ec", &["-t", "ecdsa", "-b", "256"]).public_line;
    lines.push((
        "sk-ed25519".into(),
        sk_key_line("sk-ssh-ed25519@openssh.com", &ed),
    ));
    lines.push((
        "sk-ecdsa".into(),
        sk_key_line("sk-ecdsa-sha2-nistp256@openssh.com", &ec),
    ));
    for (name, line) in lines {
        let (status, body) = api.add_key(&gw.token, &name, &line).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(
            body["fingerprint_sha256"],
            ssh_keygen_fingerprint(&line).as_str(),
            "{name}"
        );
        assert_eq!(
            body["key_type"],
            line.split_whitespace().next().unwrap(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_get_clear_errors() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let dir = tempfile::tempdir().unwrap();
    let weak_rsa = keygen(dir.path(), "weak", &["-t", "rsa", "-b", "1024"]).public_line;
    let dsa = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAOr8QvBC6mEJvLtJyo1j8wsD1N4YrPi1z6fsHR9ecDmyjz7yMvXqNNQVj1j6f0qypz7FCKB4rZ8pJKv3Ej3fM1y3DvA5NEBjGnwHo2pF5y2nqKNUf7tJ1yQtCUzfRm06NRuqHHBIxnBdNQ5Q9JH+JcPHLm2yLbnElO2ihSLbIlHm dsa@old";
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "not a key at all".into(), "not an OpenSSH public key"),
        ("empty", "".into(), "empty"),
        ("rsa1024", weak_rsa, "at least 2048 bits"),
        ("dsa", dsa.into(), "DSA"),
        (
            "two lines",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIux7Y/CL5HycGjcYjn8gjVaFq877yT1BKtBln/XMf+0\nssh-ed25519 AAAA".into(),
            "single line",
        ),
    ];
    for (name, line, expect) in cases {
        let (status, body) = api.add_key(&gw.token, name, &line).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expect), "{name}: {message}");
    }

    // Malformed JSON and missing fields are 4xx with a JSON body too.
    let resp = api
        .client
        .post(format!("{}/users/me/ssh-keys", gw.api))
        .bearer_auth(&gw.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].is_string());

    // Oversized bodies: 413.
    let huge = "A".repeat(200 * 1024);
    let (status, body) = api.add_key(&gw.token, "huge", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_conflict() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k", &["-t", "ed25519"]).public_line;
    assert_eq!(
        api.add_key(&gw.token, "first", &key).await.0,
        StatusCode::CREATED
    );
    let (status, body) = api.add_key(&gw.token, "second", &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The same key under a different comment is still the same key, for anyone.
    let (bob_token, _) = gw.user_with_key("bob").await;
    let recommented = format!("{} other-comment", key.rsplit_once(' ').unwrap().0);
    let (status, body) = api.add_key(&bob_token, "stolen", &recommented).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another account")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_required() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let (status, body) = api.get(None, "/users/me/ssh-keys").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = api
        .get(Some("sgw_not-a-real-token"), "/users/me/ssh-keys")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api.get(Some(&gw.token), "/users/me/ssh-keys").await;
    assert_eq!(status, StatusCode::OK);
    // The token is not stored in the clear.
    let db = std::fs::read(gw.data_dir().join("gateway.db")).unwrap();
    assert!(!db.windows(gw.token.len()).any(|w| w == gw.token.as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_detail_gives_ssh_coordinates_and_hides_others() {
    let gw = Gateway::start();
    let api = Api::new(&gw);
    let (status, body) = api.get(Some(&gw.token), "/api/v1/sandboxes/demo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "demo");
    assert_eq!(body["ssh"]["host"], "127.0.0.1");
    assert_eq!(body["ssh"]["port"], gw.ssh_port);
    assert_eq!(body["ssh"]["username"], "demo");

    gw.user_with_key("carol").await;
    gw.admin(&["sandbox", "add", "carols", "--owner", "carol"]);
    let (unknown_status, unknown) = api.get(Some(&gw.token), "/api/v1/sandboxes/nope").await;
    let (forbidden_status, forbidden) = api.get(Some(&gw.token), "/api/v1/sandboxes/carols").await;
    assert_eq!(unknown_status, StatusCode::NOT_FOUND);
    assert_eq!(forbidden_status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nope", "X"),
        forbidden["error"]["message"]
            .as_str()
            .unwrap()
            .replace("carols", "X"),
    );
}
