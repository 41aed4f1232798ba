//! The store's contract, run unchanged on SQLite and on a real PostgreSQL.

mod support;

use ssh_gateway::keys::parse_public_key;
use ssh_gateway::ssh::auth::KeyStore;
use ssh_gateway::store::{NewKey, Store, StoreError};

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIux7Y/CL5HycGjcYjn8gjVaFq877yT1BKtBln/XMf+0 alice@laptop";

async fn suite(store: Store) {
    // Migrations are idempotent.
    store.migrate().await.unwrap();

    // Users: unique names, lookups both ways.
    let alice = store.create_user("alice").await.unwrap();
    let bob = store.create_user("bob").await.unwrap();
    assert!(matches!(
        store.create_user("alice").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_user("bad name").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.user_by_name("alice").await.unwrap(), alice);
    assert_eq!(store.user_by_id(&bob.id).await.unwrap(), bob);
    assert!(matches!(
        store.user_by_name("carol").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.ensure_user("alice").await.unwrap(), alice);

    // The admin right: off by default, granted and taken back per user.
    assert!(!store.is_admin(&alice.id).await.unwrap());
    store.set_admin(&alice.id, true).await.unwrap();
    assert!(store.is_admin(&alice.id).await.unwrap());
    assert!(!store.is_admin(&bob.id).await.unwrap());
    store.set_admin(&alice.id, false).await.unwrap();
    assert!(!store.is_admin(&alice.id).await.unwrap());
    assert!(matches!(
        store.set_admin("usr_nobody", true).await,
        Err(StoreError::NotFound)
    ));
    assert!(!store.is_admin("usr_nobody").await.unwrap());

    // Tokens: the secret finds its user; only a hash is stored.
    let token = store.create_token(&alice.id, "cli").await.unwrap();
    assert_eq!(store.user_for_token(&token.secret).await.unwrap(), alice);
    assert!(matches!(
        store.user_for_token("sgw_wrong").await,
        Err(StoreError::NotFound)
    ));
    assert!(!format!("{token:?}").contains(&token.secret));
    assert_eq!(
        store.delete_tokens_named(&alice.id, "cli").await.unwrap(),
        1
    );
    assert!(matches!(
        store.user_for_token(&token.secret).await,
        Err(StoreError::NotFound)
    ));

    // Keys: one key identifies one user.
    let key = parse_public_key(ALICE_KEY).unwrap();
    let added = store
        .add_key(NewKey {
            user_id: &alice.id,
            name: "laptop",
            key: &key,
        })
        .await
        .unwrap();
    assert_eq!(added.fingerprint_sha256, key.fingerprint);
    let again = store
        .add_key(NewKey {
            user_id: &alice.id,
            name: "again",
            key: &key,
        })
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(m)) if m.contains("your account")));
    let stolen = store
        .add_key(NewKey {
            user_id: &bob.id,
            name: "mine",
            key: &key,
        })
        .await;
    assert!(matches!(stolen, Err(StoreError::Conflict(m)) if m.contains("another account")));
    assert_eq!(
        store.list_keys(&alice.id).await.unwrap(),
        vec![added.clone()]
    );
    assert!(store.list_keys(&bob.id).await.unwrap().is_empty());

    // Auth's view of the same key.
    let principal = store
        .principal_for(&key.fingerprint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            principal.user_id(),
            principal.user_name(),
            principal.key_id().unwrap_or_default()
        ),
        (alice.id.as_str(), "alice", added.id.as_str())
    );

    // Only the owner deletes; then auth no longer finds it.
    assert!(matches!(
        store.delete_key(&bob.id, &added.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_key(&alice.id, &added.id).await.unwrap();
    assert!(
        store
            .principal_for(&key.fingerprint)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.delete_key(&alice.id, &added.id).await,
        Err(StoreError::NotFound)
    ));

    // Sandboxes: owner and members are allowed, nobody else.
    let carol = store.create_user("carol").await.unwrap();
    store
        .create_sandbox("sb-1", &alice.id, Some("/tmp/sb-1"))
        .await
        .unwrap();
    store.add_member("sb-1", &bob.id).await.unwrap();
    assert!(matches!(
        store.create_sandbox("sb-1", &bob.id, None).await,
        Err(StoreError::Conflict(_))
    ));
    let sb = store.sandbox("sb-1").await.unwrap();
    assert_eq!(sb.workdir.as_deref(), Some("/tmp/sb-1"));
    assert!(sb.allows(&alice.id) && sb.allows(&bob.id) && !sb.allows(&carol.id));
    assert!(matches!(
        store.sandbox("nope").await,
        Err(StoreError::NotFound)
    ));
    store.ping().await.unwrap();

    // The audit trail: a connection recorded by a process that then falls silent is
    // closed as orphaned once it is stale, as ended when it was last seen; one of a
    // live process is not.
    use ssh_gateway::store::{AuditConnection, AuditFilter, AuditRecord};
    let open = |id: &str| {
        AuditRecord::Open(AuditConnection {
            id: id.into(),
            user_id: alice.id.clone(),
            user_name: "alice".into(),
            key_id: "key_x".into(),
            key_fingerprint: "SHA256:x".into(),
            certificate_serial: None,
            source_address: "127.0.0.1:1".into(),
            target: "sb-1".into(),
            started_at: 1_000,
            ended_at: None,
            bytes_in: 0,
            bytes_out: 0,
            close_reason: None,
            channels: vec![],
        })
    };
    store.instance_alive("gw_dead", "host-a").await.unwrap();
    store.instance_alive("gw_live", "host-b").await.unwrap();
    store
        .audit_write(&[open("ses_dead")], "gw_dead")
        .await
        .unwrap();
    store
        .audit_write(&[open("ses_live")], "gw_live")
        .await
        .unwrap();
    assert_eq!(store.close_orphans(0).await.unwrap(), 0);
    // gw_live is seen again after the cutoff, gw_dead never.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = ssh_gateway::store::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.instance_alive("gw_live", "host-b").await.unwrap();
    assert_eq!(store.close_orphans(cutoff).await.unwrap(), 1);
    let trail = store
        .audit_sessions(AuditFilter::Everyone, None, 10)
        .await
        .unwrap();
    let dead = trail.iter().find(|c| c.id == "ses_dead").unwrap();
    assert_eq!(
        dead.close_reason.as_deref(),
        Some(ssh_gateway::store::ORPHANED)
    );
    assert!(dead.ended_at.is_some_and(|t| t < cutoff));
    let live = trail.iter().find(|c| c.id == "ses_live").unwrap();
    assert_eq!(live.ended_at, None);
    // Forgotten once closed; alive again, it registers anew.
    assert_eq!(store.close_orphans(cutoff).await.unwrap(), 0);
    store.instance_alive("gw_dead", "host-a").await.unwrap();

    // A burst is stored whole, in batches larger than one statement's worth of rows:
    // 250 connections with a channel each, closed in the next batch beside ten that
    // open and close within it (the order inside a batch must not matter).
    let burst = |i: usize| format!("ses_burst{i:03}");
    let mut first = Vec::new();
    for i in 0..250 {
        let AuditRecord::Open(mut c) = open(&burst(i)) else {
            unreachable!()
        };
        c.started_at = 2_000 + i as i64;
        c.certificate_serial = (i % 2 == 0).then_some(i as i64);
        first.push(AuditRecord::Open(c));
        first.push(AuditRecord::Channel(
            burst(i),
            ssh_gateway::store::AuditChannel {
                channel: 0,
                kind: "session".into(),
                program: format!("echo 'it''s' {i}"),
                started_at: 2_000 + i as i64,
                ended_at: 3_000 + i as i64,
                bytes_in: i as i64,
                bytes_out: 2 * i as i64,
                exit_status: (i % 3 != 0).then_some(i as i64 % 256),
                outcome: "exit".into(),
                recording: None,
            },
        ));
    }
    store.audit_write(&first, "gw_live").await.unwrap();
    let mut second = Vec::new();
    for i in 250..260 {
        let close = AuditRecord::Close {
            id: burst(i),
            ended_at: 9_000,
            bytes: (1, 2),
            reason: "client closed".into(),
        };
        // Closed before it is opened, within the batch.
        second.push(close);
        second.push(open(&burst(i)));
    }
    for i in 0..250 {
        second.push(AuditRecord::Close {
            id: burst(i),
            ended_at: 4_000 + i as i64,
            bytes: (10 * i as i64, 20 * i as i64),
            reason: format!("reason {i}"),
        });
    }
    store.audit_write(&second, "gw_live").await.unwrap();
    let trail = store
        .audit_sessions(AuditFilter::Everyone, None, 1000)
        .await
        .unwrap();
    let stored: Vec<_> = trail
        .iter()
        .filter(|c| c.id.starts_with("ses_burst"))
        .collect();
    assert_eq!(stored.len(), 260);
    for c in stored {
        let i: usize = c.id["ses_burst".len()..].parse().unwrap();
        if i >= 250 {
            assert_eq!(c.ended_at, Some(9_000), "{}", c.id);
            assert_eq!(c.close_reason.as_deref(), Some("client closed"));
            assert!(c.channels.is_empty());
            continue;
        }
        assert_eq!(c.started_at, 2_000 + i as i64);
        assert_eq!(c.certificate_serial, (i % 2 == 0).then_some(i as i64));
        assert_eq!(c.ended_at, Some(4_000 + i as i64), "{}", c.id);
        assert_eq!((c.bytes_in, c.bytes_out), (10 * i as i64, 20 * i as i64));
        assert_eq!(
            c.close_reason.as_deref(),
            Some(format!("reason {i}").as_str())
        );
        let [ch] = c.channels.as_slice() else {
            panic!("{}: {:?}", c.id, c.channels)
        };
        assert_eq!(ch.program, format!("echo 'it''s' {i}"));
        assert_eq!((ch.bytes_in, ch.bytes_out), (i as i64, 2 * i as i64));
        assert_eq!(ch.exit_status, (i % 3 != 0).then_some(i as i64 % 256));
    }
}

#[tokio::test]
async fn store_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    suite(Store::open(&url, 2).await.unwrap()).await;
}

#[tokio::test]
async fn store_contract_on_postgres() {
    let url = support::postgres::cluster()
        .database("store_contract")
        .await;
    suite(Store::open(&url, 2).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::open(&url, 1).await.unwrap();
    store.create_user("persisted").await.unwrap();
    store.close().await;
    let store = Store::open(&url, 1).await.unwrap();
    assert_eq!(
        store.user_by_name("persisted").await.unwrap().name,
        "persisted"
    );
}

/// A user with one key and a sandbox they own, written through `store`; returns the
/// key's fingerprint and the user's id.
async fn seed(store: &Store) -> (String, String) {
    let user = store.create_user("alice").await.unwrap();
    let key = parse_public_key(ALICE_KEY).unwrap();
    store
        .add_key(NewKey {
            user_id: &user.id,
            name: "laptop",
            key: &key,
        })
        .await
        .unwrap();
    store.create_sandbox("sb", &user.id, None).await.unwrap();
    (key.fingerprint, user.id)
}

/// The gateway's login reads on SQLite skip sqlx's pool; they must still see every
/// commit at once, including one by another process on the same file (the admin CLI
/// deleting a key or removing a member while the gateway serves).
#[tokio::test]
async fn sqlite_login_reads_see_another_writers_commits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let gateway = Store::open(&url, 2).await.unwrap();
    let cli = Store::open(&url, 1).await.unwrap();
    let (fingerprint, alice) = seed(&cli).await;
    let bob = cli.create_user("bob").await.unwrap();

    // Read (and so warm) everything through the gateway's handle first.
    let key = gateway.principal_for(&fingerprint).await.unwrap().unwrap();
    assert_eq!(key.user_id(), alice);
    assert!(!gateway.sandbox("sb").await.unwrap().allows(&bob.id));

    cli.add_member("sb", &bob.id).await.unwrap();
    assert!(gateway.sandbox("sb").await.unwrap().allows(&bob.id));
    cli.remove_member("sb", &bob.id).await.unwrap();
    assert!(!gateway.sandbox("sb").await.unwrap().allows(&bob.id));

    cli.delete_key(&alice, key.key_id().unwrap()).await.unwrap();
    assert!(gateway.principal_for(&fingerprint).await.unwrap().is_none());
    cli.delete_user(&alice).await.unwrap();
    assert!(matches!(
        gateway.sandbox("sb").await,
        Err(StoreError::NotFound)
    ));
}
