//! Revocation of live connections: when the store says something that grants access
//! went away (a key, a user, a token, a membership; `store::Change`), every
//! connection it may concern is checked again, exactly as a new channel would be,
//! and those that fail are ended with a reason the user reads. A periodic sweep of
//! all connections is the safety net for changes whose notification was lost.
//!
//! Only a definite "no" ends a connection. A database or control-plane outage keeps
//! established sessions running (their next channel meets the outage instead).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Gateway;
use super::auth::still_valid;
use crate::conn::events::{CloseReason, Revocation};
use crate::conn::registry::LiveLogin;
use crate::control::{ControlError, Credential};
use crate::route::TargetRef;
use crate::store::Change;

/// Connections checked at once: each check is a store query or two.
const CONCURRENCY: usize = 32;
/// Changes taken together into one sweep (a user with many keys deleted at once).
const BATCH: usize = 1024;

/// Re-checks connections as `changes` arrive, and all of them every `every` (never
/// when zero), until `stop`.
pub async fn run(
    gw: Arc<Gateway>,
    mut changes: broadcast::Receiver<Change>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(if every.is_zero() {
        Duration::from_secs(3600)
    } else {
        every
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick(), if !every.is_zero() => Change::Everything,
            change = changes.recv() => match change {
                Ok(change) => change,
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "revocation changes arrived faster than they were handled; re-checking every connection");
                    Change::Everything
                }
                Err(RecvError::Closed) => return,
            },
        };
        let mut batch = HashSet::from([first]);
        while batch.len() < BATCH {
            match changes.try_recv() {
                Ok(change) => {
                    batch.insert(change);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    batch.insert(Change::Everything);
                }
                Err(_) => break,
            }
        }
        sweep(&gw, &batch).await;
    }
}

/// Checks every connection the changes concern; returns how many were ended.
pub async fn sweep(gw: &Gateway, changes: &HashSet<Change>) -> usize {
    let concerned: Vec<(LiveLogin, bool)> = gw
        .registry
        .logins()
        .into_iter()
        .filter_map(|login| {
            let account_gone =
                changes.contains(&Change::User(login.principal.user_id().to_owned()));
            concerns(changes, &login).then_some((login, account_gone))
        })
        .collect();
    if concerned.is_empty() {
        return 0;
    }
    let ended: Vec<bool> = futures::stream::iter(concerned)
        .map(|(login, account_gone)| async move {
            let Some(why) = verdict(gw, &login).await else {
                return false;
            };
            let why = if account_gone && why != Revocation::Access {
                Revocation::Account
            } else {
                why
            };
            info!(
                conn = login.id,
                account = %login.principal.user_name(),
                "{}; ending the connection",
                why.as_str()
            );
            crate::metrics::global().revoked(match why {
                Revocation::Key => "key",
                Revocation::Certificate => "certificate",
                Revocation::Account => "account",
                Revocation::Token => "token",
                Revocation::Access => "access",
            });
            gw.registry.cancel(login.id, CloseReason::Revoked(why));
            true
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    ended.into_iter().filter(|e| *e).count()
}

/// Whether any of `changes` may concern `login`.
fn concerns(changes: &HashSet<Change>, login: &LiveLogin) -> bool {
    let who = &login.principal;
    changes.iter().any(|change| match change {
        Change::Everything => true,
        Change::Key(id) => who.key_id() == Some(id.as_str()),
        Change::User(id) => who.user_id() == id,
        // Which token issued a certificate is the store's to say.
        Change::Token(id) => who.certificate_serial().is_some() || who.token_id() == Some(id),
        Change::Sandbox(id) => matches!(
            login.route.as_ref(),
            Ok(route) if matches!(&route.target, TargetRef::Sandbox(s) if s == id)
        ),
        Change::Workload { remote, family } => matches!(
            login.route.as_ref(),
            Ok(route) if route.remote == *remote && route.target.family() == *family
        ),
    })
}

/// What was taken away from `login`, if anything: its credential, then its access to
/// the target, each asked afresh.
async fn verdict(gw: &Gateway, login: &LiveLogin) -> Option<Revocation> {
    let who = &login.principal;
    match still_valid(gw.keys.as_ref(), who).await {
        Ok(true) => {}
        Ok(false) => {
            return Some(match who.credential() {
                Credential::Key { .. } => Revocation::Key,
                Credential::Certificate { .. } => Revocation::Certificate,
                Credential::ApiToken { .. } => Revocation::Token,
            });
        }
        Err(e) => {
            warn!(conn = login.id, error = %e, "cannot re-check a connection's key; keeping it");
            return None;
        }
    }
    // A refused route never reached anything: its channels are refused anyway.
    let route = login.route.as_ref().as_ref().ok()?;
    let cluster = gw.remotes.get(route.remote.as_deref())?;
    match cluster.control.resolve(who, &route.target).await {
        Err(ControlError::NoAccess(_)) => Some(Revocation::Access),
        // Not a "no" about this user: the cluster refused the gateway, or is down.
        Err(ControlError::Unavailable(e) | ControlError::Denied(e)) => {
            warn!(conn = login.id, error = %e, "cannot re-check a connection's access; keeping it");
            None
        }
        // Paused or not ready is still allowed.
        Ok(_) | Err(ControlError::Paused(_)) | Err(ControlError::NotReady(_)) => None,
    }
}
