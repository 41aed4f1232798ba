//! What changed in the store that can take access away, as plain data, for the
//! revocation sweep (`ssh::revoke`). Two sources feed one broadcast:
//!
//! - this process's own writes, announced after they succeed (the only source on
//!   SQLite, where one process serves);
//! - on PostgreSQL, the triggers of migration 0003, which `pg_notify` every delete
//!   and owner change whoever made it (another replica's API, the admin CLI, plain
//!   SQL). `listen` relays them; whenever its connection was lost it announces
//!   `Everything`, since notifications sent meanwhile are gone.
//!
//! A change is a hint to re-check, never a verdict: the sweep asks the store again,
//! so a duplicate or a stale change costs a query and nothing else.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Flavor, Store};

/// The PostgreSQL channel the triggers notify on.
pub const CHANNEL: &str = "ssh_gateway_changes";
/// Changes buffered per subscriber; a subscriber that falls behind re-checks all.
const BUFFER: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A key was deleted (with it, the certificates issued for it).
    Key(String),
    /// A user was deleted (with them, their keys, tokens and certificates).
    User(String),
    /// A sandbox lost a member, changed owner, or was deleted.
    Sandbox(String),
    /// An API token was deleted (with it, the certificates it was used to issue).
    Token(String),
    /// The Kubernetes objects that decide access to a workload changed (an owner or
    /// members annotation edited, a decoy appeared, labels moved): announced by this
    /// process's watch of the cluster (`control::kube_access`), never by the database.
    /// `family` is `TargetRef::family`; `remote` the cluster (`None`: the default).
    Workload {
        remote: Option<String>,
        family: String,
    },
    /// Anything may have changed (notifications were missed): re-check everyone.
    Everything,
}

impl Change {
    /// Reads a trigger's payload (`key:<id>`, `user:<id>`, …); `None` for anything else.
    pub fn parse(payload: &str) -> Option<Change> {
        let (kind, id) = payload.split_once(':')?;
        if id.is_empty() {
            return None;
        }
        let id = id.to_owned();
        Some(match kind {
            "key" => Change::Key(id),
            "user" => Change::User(id),
            "sandbox" => Change::Sandbox(id),
            "token" => Change::Token(id),
            _ => return None,
        })
    }
}

/// The broadcast every clone of a store shares.
#[derive(Clone)]
pub(super) struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Self {
        Changes(broadcast::channel(BUFFER).0)
    }
}

impl Store {
    /// Every change from now on; a receiver that lags gets `RecvError::Lagged`,
    /// which its owner must treat as `Everything`.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.0.subscribe()
    }

    /// Announces a change this process saw outside the database (a cluster object's
    /// access edited): every subscriber re-checks what it concerns.
    pub fn announce(&self, change: Change) {
        self.changed(change);
    }

    /// Announces a change this process made (no subscribers is fine).
    pub(super) fn changed(&self, change: Change) {
        let _ = self.changes.0.send(change);
    }

    /// On PostgreSQL, relays the triggers' notifications into `changes` until `stop`,
    /// reconnecting after failures; on SQLite, returns at once.
    pub async fn listen(self, stop: CancellationToken) {
        if self.flavor != Flavor::Postgres {
            return;
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            let session = async {
                let mut listener = PgListener::connect(&self.url).await?;
                listener.listen(CHANNEL).await?;
                info!("listening for revocations from the database");
                // Whatever happened while not listening is unknown.
                self.changed(Change::Everything);
                backoff = Duration::from_millis(250);
                loop {
                    match listener.try_recv().await? {
                        Some(n) => match Change::parse(n.payload()) {
                            Some(change) => self.changed(change),
                            None => warn!(payload = n.payload(), "unreadable change notification"),
                        },
                        // The connection dropped; try_recv reconnects on the next call.
                        None => {
                            warn!(
                                "lost the database connection that carries revocations; reconnecting"
                            );
                            self.changed(Change::Everything);
                        }
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                ended = session => {
                    if let Err(e) = ended {
                        warn!(error = %e, retry_ms = backoff.as_millis() as u64, "revocation listener failed; retrying");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            Change::parse("key:key_1"),
            Some(Change::Key("key_1".into()))
        );
        assert_eq!(
            Change::parse("user:usr_2"),
            Some(Change::User("usr_2".into()))
        );
        assert_eq!(
            Change::parse("sandbox:a:b"),
            Some(Change::Sandbox("a:b".into()))
        );
        assert_eq!(
            Change::parse("token:tok_3"),
            Some(Change::Token("tok_3".into()))
        );
        assert_eq!(Change::parse("key:"), None);
        assert_eq!(Change::parse("nonsense"), None);
        assert_eq!(Change::parse("group:x"), None);
    }
}
