//! Who migrates the schema: by default `serve` does at start; a deployment whose
//! migrate step runs first (the Helm chart's hook Job) turns that off, and replicas
//! then refuse a schema that is behind, saying what to run. A database a newer
//! gateway migrated further still serves an older one, so a rollback starts.

mod support;

use std::process::Command;

use support::{BIN, StaticConfig};

const NO_MIGRATE: (&str, &str) = ("SSH_GATEWAY__DATABASE__MIGRATE_ON_START", "false");

/// `ssh-gateway migrate`, as the chart's hook Job runs it; it must succeed.
fn migrate(config: &StaticConfig) {
    let out = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&config.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replicas_that_do_not_migrate_refuse_a_schema_behind_and_start_once_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let config = StaticConfig::write(dir.path(), "", "");

    // A new, empty database: nothing applied.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config.path)
        .env(NO_MIGRATE.0, NO_MIGRATE.1)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the database schema is behind this gateway")
            && err.contains("run `ssh-gateway migrate"),
        "{err}"
    );

    migrate(&config);

    // Now it starts, and serves.
    let _serve = config.serve_with_env(&[NO_MIGRATE]);
    let health = tokio::runtime::Runtime::new().unwrap().block_on(async {
        support::http()
            .get(format!("{}/healthz", config.api()))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(health, 200);
}

#[test]
fn a_database_migrated_by_a_newer_gateway_still_serves_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = StaticConfig::write(dir.path(), "", "");
    migrate(&config);
    // What a later release's migration leaves behind.
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::ConnectOptions;
        let mut db = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (29991231000000, 'from a newer gateway', TRUE, X'00', 0)",
        )
        .execute(&mut db)
        .await
        .unwrap();
    });
    // Both ways of starting accept it.
    for env in [vec![], vec![NO_MIGRATE]] {
        let serve = config.serve_with_env(&env);
        drop(serve);
    }
    // And `migrate` itself has nothing to say against it.
    migrate(&config);
}
