//! Store stage: users, API tokens, SSH keys and static sandboxes, in SQLite (embedded
//! default) or PostgreSQL (region deployment). All SQL lives under this module; the
//! same queries run on both through sqlx's `Any` driver (`$N` placeholders work in both).

mod audit;
mod certificates;
mod changes;
mod files;
mod inline;
mod keys;
mod sandboxes;
mod tokens;
mod users;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditChannel, AuditConnection, AuditCursor, AuditFilter, AuditRecord, ORPHANED};
pub use certificates::{CertificateLogin, IssuedCertificate};
pub use changes::Change;
pub use files::{FileModeError, ensure_private_dir};
pub use keys::{KeyLogin, NewKey, SshKey};
pub use sandboxes::Sandbox;
pub use tokens::{Token, hash_token};
pub use users::{User, valid_user_name};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the payload says which, in user terms.
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database file permissions: {0}")]
    FileMode(#[from] FileModeError),
    /// Checked at start when the gateway does not migrate itself.
    #[error(
        "the database schema is behind this gateway (migrations {0} not applied); run `ssh-gateway migrate --config …` first"
    )]
    SchemaBehind(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    flavor: Flavor,
    /// For the revocation listener's own connection. Holds the password: never logged.
    url: std::sync::Arc<str>,
    changes: changes::Changes,
    /// On a SQLite file: the login path's reads, without sqlx's thread hop.
    inline: Option<std::sync::Arc<inline::InlineReads>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("flavor", &self.flavor)
            .finish()
    }
}

impl Store {
    /// Connects (creating a SQLite file, mode 0600, if needed). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        install_default_drivers();
        let flavor = if url.starts_with("sqlite:") {
            Flavor::Sqlite
        } else {
            Flavor::Postgres
        };
        let mut url = url.to_owned();
        if flavor == Flavor::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        if flavor == Flavor::Sqlite {
            files::prepare_sqlite(&url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // Bounds how long a login or API call waits during a database outage.
            .acquire_timeout(Duration::from_secs(5))
            // A pooled SQLite connection is a file handle that cannot go stale; the
            // ping before every use was a fifth of a login's store cost. Postgres
            // connections can die with the server, so they are still checked.
            .test_before_acquire(flavor == Flavor::Postgres)
            // A SQLite connection is a file handle and a worker thread with its own
            // page and statement caches (~0.7 MiB each after a burst of logins):
            // close the ones a burst opened once they have been idle a little while,
            // so the memory goes back. Reopening one costs about a millisecond.
            // PostgreSQL connections cost a login to the server; they keep sqlx's
            // default.
            .idle_timeout(match flavor {
                Flavor::Sqlite => Some(Duration::from_secs(10)),
                Flavor::Postgres => Some(Duration::from_secs(600)),
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if flavor == Flavor::Sqlite {
                        // WAL lets the admin CLI write while a gateway reads; the busy
                        // timeout turns lock contention into waiting, not errors.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let inline = match flavor {
            Flavor::Sqlite => files::sqlite_file(&url)
                .map(|path| std::sync::Arc::new(inline::InlineReads::new(&path))),
            Flavor::Postgres => None,
        };
        Ok(Self {
            pool,
            flavor,
            url: url.into(),
            changes: changes::Changes::default(),
            inline,
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let store = Self::connect(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects and checks that every migration this gateway knows is applied,
    /// without applying any: for replicas whose schema a deploy step (the Helm hook
    /// running `ssh-gateway migrate`) brings up to date.
    pub async fn open_migrated(url: &str, max_connections: u32) -> Result<Self> {
        let store = Self::connect(url, max_connections).await?;
        store.check_schema().await?;
        Ok(store)
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        let mut migrator = match self.flavor {
            Flavor::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Flavor::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        // A database a newer gateway migrated further still serves this one: a
        // rollback must not crash-loop on migrations it has never heard of (each
        // migration only adds, so the older code's tables are all there).
        migrator.set_ignore_missing(true);
        migrator
    }

    pub async fn migrate(&self) -> Result<()> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Refuses a schema missing any migration this gateway knows.
    pub async fn check_schema(&self) -> Result<()> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await
            {
                Ok(versions) => versions,
                // No migrations table: nothing was ever applied.
                Err(sqlx::Error::Database(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
        let missing: Vec<String> = self
            .migrator()
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| m.version.to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::SchemaBehind(missing.join(", ")))
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

/// Maps a unique-constraint violation to a conflict with a user-facing message.
pub(crate) fn conflict_on_unique(err: sqlx::Error, message: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(message.to_owned())
        }
        _ => StoreError::Db(err),
    }
}
