//! Truthful activity for scale-to-zero: per target, how many connections are open and
//! when payload last moved (channel bytes, never keepalives), reported to the control
//! plane when a connection comes or goes and as a heartbeat while any stay open.
//!
//! It listens to the connection event stream (who connected to what, channels closing
//! with their last payload time) and reads live channels' counters from the registry,
//! so the bridge pays one relaxed store per chunk and nothing else. Reports leave from
//! one task of its own: connect bursts are batched, and a slow control plane delays
//! reports, never connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ConnId;
use super::events::{CloseReason, Event, Subscriber};
use super::registry::Registry;
use crate::control::{Activity, ActivityEvent};
use crate::remotes::Remotes;

/// Connects and disconnects arriving within this are reported together.
const BATCH: Duration = Duration::from_millis(200);
/// Bound on one report (the control plane has its own timeouts; this is the backstop).
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ActivityTracker {
    /// Targets are `Route::key`s: each is reported to its own remote's control plane.
    remotes: Arc<Remotes>,
    heartbeat: Duration,
    /// `[activity] pause_after_idle_secs`, when on.
    pause_after: Option<Duration>,
    registry: OnceLock<Weak<Registry>>,
    changed: Notify,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Authenticated connections.
    conns: HashMap<ConnId, SeenConn>,
    /// Latest payload on channels that have closed since, per target.
    closed_payload: HashMap<String, u64>,
    /// Why the latest connection to each target closed.
    closed_reason: HashMap<String, CloseReason>,
    /// Connections that came and went per target since the last report, so one that
    /// comes and goes within a batch is still reported.
    churn: HashMap<String, Churn>,
}

#[derive(Default, Clone, Copy)]
struct Churn {
    connects: u32,
    disconnects: u32,
}

struct SeenConn {
    target: String,
    /// When it authenticated (Unix ms).
    since_ms: u64,
    /// The latest payload on its channels that have closed since.
    closed_payload_ms: Option<u64>,
}

impl ActivityTracker {
    pub fn new(
        remotes: Arc<Remotes>,
        heartbeat: Duration,
        pause_after: Option<Duration>,
    ) -> Arc<Self> {
        Arc::new(Self {
            remotes,
            heartbeat,
            pause_after,
            registry: OnceLock::new(),
            changed: Notify::new(),
            seen: Mutex::new(Seen::default()),
        })
    }

    /// The registry whose connections are counted (it is built with this tracker
    /// among its subscribers, hence after it).
    pub fn attach(&self, registry: &Arc<Registry>) {
        let _ = self.registry.set(Arc::downgrade(registry));
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is true now, per target.
    fn snapshot(&self) -> HashMap<String, Activity> {
        let mut now: HashMap<String, Activity> = HashMap::new();
        let Some(registry) = self.registry.get().and_then(Weak::upgrade) else {
            return now;
        };
        // Read the registry before taking `seen`, never both at once: events reach
        // `seen` from code that may hold the registry's lock.
        let mut live = Vec::with_capacity(registry.len());
        registry.for_each_payload(|id, last| live.push((id, last)));
        let seen = self.seen();
        for (id, last_payload_ms) in live {
            let Some(seen_conn) = seen.conns.get(&id) else {
                continue;
            };
            if let Some(entry) = now.get_mut(&seen_conn.target) {
                entry.open_sessions += 1;
                entry.last_payload_ms = entry.last_payload_ms.max(last_payload_ms);
            } else {
                now.insert(
                    seen_conn.target.clone(),
                    Activity {
                        event: ActivityEvent::Heartbeat,
                        open_sessions: 1,
                        last_payload_ms,
                    },
                );
            }
        }
        for (target, &at) in &seen.closed_payload {
            let entry = now.entry(target.clone()).or_insert(Activity {
                event: ActivityEvent::Heartbeat,
                open_sessions: 0,
                last_payload_ms: None,
            });
            entry.last_payload_ms = entry.last_payload_ms.max(Some(at));
        }
        now
    }

    /// Reports until `stop`: on every change (batched) and every heartbeat.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut reported: HashMap<String, (Activity, Instant)> = HashMap::new();
        // Targets reported with no connections, and since when (Unix ms) nothing has
        // moved on them: candidates for an idle pause.
        let mut quiet: HashMap<String, u64> = HashMap::new();
        loop {
            let sleep = self
                .next_pause(&quiet)
                .map_or(self.heartbeat, |d| d.min(self.heartbeat));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.changed.notified() => tokio::time::sleep(BATCH).await,
                _ = stop.cancelled() => return,
            }
            let now = self.snapshot();
            self.pause_quiet(&mut quiet).await;
            let churn = std::mem::take(&mut self.seen().churn);
            let mut targets: Vec<String> = now.keys().cloned().collect();
            for t in reported.keys().chain(churn.keys()) {
                if !targets.contains(t) {
                    targets.push(t.clone());
                }
            }
            for target in targets {
                let activity = now.get(&target).cloned().unwrap_or_else(|| Activity {
                    event: ActivityEvent::Heartbeat,
                    open_sessions: 0,
                    last_payload_ms: reported.get(&target).and_then(|(a, _)| a.last_payload_ms),
                });
                // Connections came or went: say so now (both, in order, if both).
                // Otherwise a heartbeat while any stay open, carrying the latest
                // payload time. Counts are as of the report.
                let churned = churn.get(&target).copied().unwrap_or_default();
                let mut events = Vec::new();
                if churned.connects > 0 {
                    events.push(ActivityEvent::Connect);
                }
                if churned.disconnects > 0 {
                    events.push(ActivityEvent::Disconnect {
                        reason: self.close_reason(&target),
                    });
                }
                let heartbeat_due = reported
                    .get(&target)
                    .is_some_and(|(_, at)| at.elapsed() >= self.heartbeat);
                if events.is_empty() && heartbeat_due && activity.open_sessions > 0 {
                    events.push(ActivityEvent::Heartbeat);
                }
                if events.is_empty() {
                    continue;
                }
                for event in events {
                    self.report(
                        &target,
                        &Activity {
                            event,
                            ..activity.clone()
                        },
                    )
                    .await;
                }
                if activity.open_sessions == 0 {
                    // Reported idle: nothing more to say until someone connects.
                    if self.pause_after.is_some() {
                        // Quiet from now: payload cannot move without a connection.
                        quiet.insert(target.clone(), super::unix_ms());
                    }
                    reported.remove(&target);
                    let mut seen = self.seen();
                    seen.closed_payload.remove(&target);
                    seen.closed_reason.remove(&target);
                } else {
                    quiet.remove(&target);
                    reported.insert(target, (activity, Instant::now()));
                }
            }
        }
    }
}

impl ActivityTracker {
    /// How long until the first quiet target is due for a pause.
    fn next_pause(&self, quiet: &HashMap<String, u64>) -> Option<Duration> {
        let after = self.pause_after?.as_millis() as u64;
        let first = quiet.values().min()?;
        let due = first.saturating_add(after);
        Some(Duration::from_millis(due.saturating_sub(super::unix_ms())))
    }

    /// Pauses the quiet targets whose time has come, unless a connection to them has
    /// authenticated meanwhile. Each is asked once; the plane may decline.
    async fn pause_quiet(&self, quiet: &mut HashMap<String, u64>) {
        let Some(after) = self.pause_after else {
            return;
        };
        let after = after.as_millis() as u64;
        let clock = super::unix_ms();
        let due: Vec<(String, u64)> = quiet
            .iter()
            .filter(|(_, since)| since.saturating_add(after) <= clock)
            .map(|(t, s)| (t.clone(), *s))
            .collect();
        for (target, since) in due {
            quiet.remove(&target);
            // Every open connection to it is among the authenticated ones seen.
            let in_use = self.seen().conns.values().any(|c| c.target == target);
            if in_use {
                continue;
            }
            let Some((cluster, name)) = self.remotes.for_key(&target) else {
                continue;
            };
            match tokio::time::timeout(REPORT_TIMEOUT, cluster.control.pause_idle(name, since))
                .await
            {
                Ok(Ok(true)) => {
                    tracing::info!(%target, idle_secs = after / 1000, "paused an idle target")
                }
                Ok(Ok(false)) => tracing::debug!(%target, "idle target not paused"),
                Ok(Err(e)) => {
                    tracing::warn!(%target, error = %e.detail(), "pausing an idle target failed")
                }
                Err(_) => tracing::warn!(%target, "pausing an idle target timed out"),
            }
        }
    }

    async fn report(&self, target: &str, activity: &Activity) {
        let Some((cluster, name)) = self.remotes.for_key(target) else {
            return;
        };
        tracing::debug!(%target, event = ?activity.event, open = activity.open_sessions, last_payload_ms = ?activity.last_payload_ms, "reporting activity");
        match tokio::time::timeout(
            REPORT_TIMEOUT,
            cluster.control.report_activity(name, activity),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%target, error = %e.detail(), "activity report failed"),
            Err(_) => tracing::warn!(%target, "activity report timed out"),
        }
    }

    fn close_reason(&self, target: &str) -> String {
        self.seen()
            .closed_reason
            .get(target)
            .map_or(CloseReason::ClientGone, |r| *r)
            .as_str()
            .to_owned()
    }

    /// Closes connections with no payload for `idle` (since they authenticated, or
    /// since the last byte on any of their channels), until `stop`.
    pub async fn close_idle(self: Arc<Self>, idle: Duration, stop: CancellationToken) {
        let every = (idle / 10).max(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let Some(registry) = self.registry.get().and_then(Weak::upgrade) else {
                return;
            };
            let now = super::unix_ms();
            let idle_ms = idle.as_millis() as u64;
            let stale: Vec<ConnId> = {
                let seen = self.seen();
                registry
                    .list()
                    .into_iter()
                    .filter_map(|c| {
                        let seen_conn = seen.conns.get(&c.id)?;
                        let last = [
                            Some(seen_conn.since_ms),
                            seen_conn.closed_payload_ms,
                            c.last_payload_ms,
                        ]
                        .into_iter()
                        .flatten()
                        .max()?;
                        (now.saturating_sub(last) > idle_ms).then_some(c.id)
                    })
                    .collect()
            };
            if !stale.is_empty() {
                let closed = registry
                    .cancel_where(super::events::CloseReason::Idle, |c| stale.contains(&c.id));
                tracing::info!(
                    closed,
                    idle_secs = idle.as_secs(),
                    "closed idle connections"
                );
            }
        }
    }
}

impl Subscriber for ActivityTracker {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Authenticated { conn, target, .. } => {
                let mut seen = self.seen();
                seen.churn.entry(target.clone()).or_default().connects += 1;
                seen.conns.insert(
                    *conn,
                    SeenConn {
                        target: target.clone(),
                        since_ms: super::unix_ms(),
                        closed_payload_ms: None,
                    },
                );
                drop(seen);
                self.changed.notify_one();
            }
            Event::ChannelClosed {
                conn,
                last_payload_ms: Some(at),
                ..
            } => {
                let mut seen = self.seen();
                let Some(seen_conn) = seen.conns.get_mut(conn) else {
                    return;
                };
                seen_conn.closed_payload_ms = seen_conn.closed_payload_ms.max(Some(*at));
                let target = seen_conn.target.clone();
                let entry = seen.closed_payload.entry(target).or_default();
                *entry = (*entry).max(*at);
            }
            Event::Closed { conn, reason, .. } => {
                let mut seen = self.seen();
                if let Some(gone) = super::remove_and_shrink(&mut seen.conns, conn) {
                    seen.churn
                        .entry(gone.target.clone())
                        .or_default()
                        .disconnects += 1;
                    seen.closed_reason.insert(gone.target, *reason);
                    drop(seen);
                    self.changed.notify_one();
                }
            }
            _ => {}
        }
    }
}
