//! The reads every login makes on SQLite (a key by fingerprint at auth and again at
//! each channel, a sandbox and its members at each channel), run on the calling task.
//!
//! Through sqlx each of them is a trip to a connection's worker thread and back: two
//! cross-thread wake-ups for a lookup SQLite answers in microseconds from its page
//! cache, and in a burst of logins those hops were about a seventh of the gateway's
//! CPU. These connections are opened by the same SQLite library (sqlx and rusqlite
//! link one libsqlite3-sys) and only read, each in its own transaction, so every read
//! still sees everything committed before it began, by this process or another (the
//! admin CLI writing the same file). WAL mode means readers never wait for writers;
//! the rare `SQLITE_BUSY` a reader can meet (another connection recovering the WAL)
//! is not waited out here, where waiting would stall the runtime's thread: the
//! caller falls back to the sqlx query, which waits with its busy timeout.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::keys::KeyLogin;
use super::sandboxes::Sandbox;

/// Connections kept for reuse. A read never awaits while it holds one, so at most one
/// is busy per runtime thread; more than that are only opened under contention and
/// closed again after their read.
const KEEP: usize = 4;

/// A pool of read-only connections to one SQLite file.
pub(super) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for InlineReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineReads")
            .field("path", &self.path)
            .finish()
    }
}

impl InlineReads {
    pub(super) fn new(path: &Path) -> Self {
        InlineReads {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // Read-write flags because a WAL reader must be able to map the -shm file;
        // `query_only` makes it refuse any write all the same. No CREATE: the file is
        // sqlx's to create (with its mode) and migrate.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", true)?;
        // Never sleep on a lock on the runtime's thread (see the module comment).
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (opening one if none is), and keeps the
    /// connection for the next read unless the read failed or enough are kept.
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            None => match self.open() {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "inline SQLite read: open failed; using the pool");
                    return None;
                }
            },
        };
        match read(&conn) {
            Ok(value) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < KEEP
                {
                    idle.push(conn);
                }
                Some(value)
            }
            Err(e) => {
                // Dropped rather than kept: whatever went wrong stays with it.
                tracing::debug!(error = %e, "inline SQLite read failed; using the pool");
                None
            }
        }
    }

    /// `Store::login_by_fingerprint`'s query; `None` when it could not be answered here.
    pub(super) fn login_by_fingerprint(&self, fingerprint: &str) -> Option<Option<KeyLogin>> {
        self.with(|conn| {
            conn.prepare_cached(LOGIN_BY_FINGERPRINT)?
                .query_row([fingerprint], |row| {
                    Ok(KeyLogin {
                        key_id: row.get(0)?,
                        user_id: row.get(1)?,
                        user_name: row.get(2)?,
                    })
                })
                .optional()
        })
    }

    /// `Store::sandbox`'s two queries in one read transaction (one snapshot: the
    /// members belong to the sandbox row read); `None` when it could not be answered
    /// here, `Some(None)` for no such sandbox.
    pub(super) fn sandbox(&self, id: &str) -> Option<Option<Sandbox>> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let row = tx
                .prepare_cached(SANDBOX)?
                .query_row([id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .optional()?;
            let Some((id, owner_id, workdir, created_at)) = row else {
                return Ok(None);
            };
            let member_ids = tx
                .prepare_cached(SANDBOX_MEMBERS)?
                .query_map([&id], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.finish()?;
            Ok(Some(Sandbox {
                id,
                owner_id,
                workdir,
                member_ids,
                created_at,
            }))
        })
    }
}

// The same SQL as the sqlx queries in keys.rs and sandboxes.rs, so either path
// answers alike (tests/store.rs runs one contract on SQLite and PostgreSQL).
pub(super) const LOGIN_BY_FINGERPRINT: &str = "SELECT k.id AS key_id, u.id AS user_id, u.name AS user_name \
     FROM ssh_keys k JOIN users u ON u.id = k.user_id \
     WHERE k.fingerprint_sha256 = $1";
pub(super) const SANDBOX: &str =
    "SELECT id, owner_id, workdir, created_at FROM sandboxes WHERE id = $1";
pub(super) const SANDBOX_MEMBERS: &str =
    "SELECT user_id FROM sandbox_members WHERE sandbox_id = $1 ORDER BY user_id";

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database with the tables these reads use, and one key and sandbox.
    fn database(dir: &Path) -> PathBuf {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT);
             CREATE TABLE ssh_keys (id TEXT, user_id TEXT, fingerprint_sha256 TEXT);
             CREATE TABLE sandboxes (id TEXT, owner_id TEXT, workdir TEXT, created_at INTEGER);
             CREATE TABLE sandbox_members (sandbox_id TEXT, user_id TEXT);
             INSERT INTO users VALUES ('usr_a', 'alice'), ('usr_b', 'bob');
             INSERT INTO ssh_keys VALUES ('key_a', 'usr_a', 'SHA256:a');
             INSERT INTO sandboxes VALUES ('sb', 'usr_a', NULL, 7);
             INSERT INTO sandbox_members VALUES ('sb', 'usr_b');",
        )
        .unwrap();
        path
    }

    #[test]
    fn answers_what_is_there_and_what_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let reads = InlineReads::new(&database(dir.path()));
        let login = reads.login_by_fingerprint("SHA256:a").unwrap().unwrap();
        assert_eq!(
            (
                login.key_id.as_str(),
                login.user_id.as_str(),
                login.user_name.as_str()
            ),
            ("key_a", "usr_a", "alice")
        );
        assert!(reads.login_by_fingerprint("SHA256:b").unwrap().is_none());
        let sandbox = reads.sandbox("sb").unwrap().unwrap();
        assert_eq!(sandbox.owner_id, "usr_a");
        assert_eq!(sandbox.member_ids, ["usr_b"]);
        assert!(reads.sandbox("other").unwrap().is_none());
        // The connection is kept, and a kept one reads again.
        assert_eq!(reads.idle.lock().unwrap().len(), 1);
        assert!(reads.sandbox("sb").unwrap().is_some());
    }

    /// What cannot be read here is handed back (`None`) for the pool to answer;
    /// it never reads as "no such key", which would refuse a valid login.
    #[test]
    fn a_read_it_cannot_make_is_handed_back_not_answered() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            InlineReads::new(&dir.path().join("missing.db"))
                .login_by_fingerprint("SHA256:a")
                .is_none()
        );

        // Another program holds the file exclusively: the read does not wait for
        // it on this thread.
        let path = database(dir.path());
        let holder = Connection::open(&path).unwrap();
        holder
            .pragma_update(None, "locking_mode", "EXCLUSIVE")
            .unwrap();
        holder
            .execute_batch("BEGIN IMMEDIATE; UPDATE users SET name = name; COMMIT;")
            .unwrap();
        let reads = InlineReads::new(&path);
        assert!(reads.login_by_fingerprint("SHA256:a").is_none());
        assert!(reads.sandbox("sb").is_none());
        assert!(
            reads.idle.lock().unwrap().is_empty(),
            "a failed connection was kept"
        );
        drop(holder);
        assert!(reads.login_by_fingerprint("SHA256:a").unwrap().is_some());
    }

    #[test]
    fn refuses_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let reads = InlineReads::new(&database(dir.path()));
        let wrote = reads.with(|conn| conn.execute("DELETE FROM ssh_keys", []));
        assert!(wrote.is_none());
        assert!(reads.login_by_fingerprint("SHA256:a").unwrap().is_some());
    }
}
