//! The one owner of every live connection and channel: who it is, what it reaches,
//! what it has moved, and how to end it. Drain, revocation, idle timeouts, limits and
//! metrics act through here; every task a connection spawns is tracked here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use super::admission::PreAuthPermit;
use super::events::{ChannelEnd, CloseReason, Event, Events};
use super::{ConnId, ConnMeta, Counters};
use crate::control::Principal;
use crate::route::{Route, RouteError};

/// What a connection asked to reach, as routing decided it.
pub type RouteResult = Arc<Result<Route, RouteError>>;

pub struct Registry {
    conns: Mutex<HashMap<ConnId, Entry>>,
    next_id: AtomicU64,
    /// The most connections held at once since the last `take_peak`.
    peak: AtomicUsize,
    tracker: TaskTracker,
    /// Parent of every connection's token: cancelling it ends them all.
    shutdown: CancellationToken,
    events: Events,
    /// A line every open session channel shows on stderr once it changes (drain).
    notice: tokio::sync::watch::Sender<Option<Arc<str>>>,
}

struct Entry {
    meta: ConnMeta,
    principal: Option<Principal>,
    target: Option<String>,
    route: Option<RouteResult>,
    channels: HashMap<u32, ChannelEntry>,
    cancel: CancellationToken,
    /// Set by the first `cancel`/`close`, so the Closed event says why.
    reason: Option<CloseReason>,
    /// Held until authentication: it is what the pre-auth caps count.
    preauth: Option<PreAuthPermit>,
    /// Whether the client offered any key (a failed login, not just a silent socket).
    keys_offered: bool,
    /// Its connection task is done but channels still finish: the last one to go
    /// reports the connection closed, so every subscriber sees a connection's
    /// channels close before the connection does.
    ended: bool,
}

struct ChannelEntry {
    kind: &'static str,
    counters: Arc<Counters>,
    cancel: CancellationToken,
}

/// A live connection as revocation, drain and metrics see it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: ConnId,
    pub peer: SocketAddr,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub key_id: Option<String>,
    pub target: Option<String>,
    /// The kinds of the open channels (`session`, `direct-tcpip`).
    pub channels: Vec<&'static str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// When payload last moved on an open channel (Unix ms).
    pub last_payload_ms: Option<u64>,
}

/// An authenticated connection, as the revocation sweep re-checks it.
#[derive(Clone)]
pub struct LiveLogin {
    pub id: ConnId,
    pub principal: Principal,
    pub route: RouteResult,
}

/// Too many channels open at once on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimit;

impl Registry {
    pub fn new(events: Events) -> Arc<Self> {
        Self::with_tracker(events, TaskTracker::new())
    }

    /// With a task tracker made earlier, so parts built before the registry (a control
    /// plane's resume tasks) are drained with it.
    pub fn with_tracker(events: Events, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            peak: AtomicUsize::new(0),
            tracker,
            shutdown: CancellationToken::new(),
            events,
            notice: tokio::sync::watch::Sender::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Registers an accepted connection. The returned `Conn` is its owner: dropping
    /// it unregisters the connection and cancels everything still running for it.
    pub fn register(self: &Arc<Self>, peer: SocketAddr, preauth: PreAuthPermit) -> Conn {
        self.register_accepted(peer, preauth, Instant::now())
    }

    /// As `register`, for a connection accepted at `accepted_at` whose client address
    /// was learned since (a PROXY protocol header): the login deadline still counts
    /// from the accept.
    pub fn register_accepted(
        self: &Arc<Self>,
        peer: SocketAddr,
        preauth: PreAuthPermit,
        accepted_at: Instant,
    ) -> Conn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let meta = ConnMeta {
            id,
            peer,
            accepted_at,
        };
        let cancel = self.shutdown.child_token();
        let mut conns = self.lock();
        conns.insert(
            id,
            Entry {
                meta: meta.clone(),
                principal: None,
                target: None,
                route: None,
                channels: HashMap::new(),
                cancel: cancel.clone(),
                reason: None,
                preauth: Some(preauth),
                keys_offered: false,
                ended: false,
            },
        );
        self.peak.fetch_max(conns.len(), Ordering::Relaxed);
        drop(conns);
        self.events.emit(Event::Accepted { conn: id, peer });
        Conn {
            handle: ConnRef {
                registry: self.clone(),
                id,
                cancel,
            },
            meta,
        }
    }

    /// Shows `text` on stderr of every open session channel (and of those opened
    /// from now on), once.
    pub fn notify_sessions(&self, text: &str) {
        self.notice.send_replace(Some(text.into()));
    }

    /// What session channels watch for `notify_sessions`.
    pub fn notices(&self) -> tokio::sync::watch::Receiver<Option<Arc<str>>> {
        self.notice.subscribe()
    }

    /// Resolves once the gateway starts draining.
    pub fn shutting_down(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Runs `task` as part of the gateway: drain waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The most connections held at once since the last call (or since start), even
    /// if they came and went between two calls.
    pub fn take_peak(&self) -> usize {
        let now = self.len();
        self.peak.swap(now, Ordering::Relaxed).max(now)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }

    pub fn list(&self) -> Vec<ConnInfo> {
        self.lock()
            .values()
            .map(|e| {
                let (bytes_in, bytes_out) = e
                    .channels
                    .values()
                    .map(|c| c.counters.snapshot())
                    .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
                ConnInfo {
                    id: e.meta.id,
                    peer: e.meta.peer,
                    user_id: e.principal.as_ref().map(|p| p.user_id().to_owned()),
                    user_name: e.principal.as_ref().map(|p| p.user_name().to_owned()),
                    key_id: e
                        .principal
                        .as_ref()
                        .and_then(|p| p.key_id().map(str::to_owned)),
                    target: e.target.clone(),
                    channels: e.channels.values().map(|c| c.kind).collect(),
                    bytes_in,
                    bytes_out,
                    last_payload_ms: e
                        .channels
                        .values()
                        .filter_map(|c| c.counters.last_payload_ms())
                        .max(),
                }
            })
            .collect()
    }

    /// Each live connection's id and latest payload time, without copying the rest:
    /// the activity tracker reads this after every batch of connects, so it must not
    /// cost an allocation per connection (a burst would make that quadratic).
    pub fn for_each_payload(&self, mut f: impl FnMut(ConnId, Option<u64>)) {
        for e in self.lock().values() {
            let last = e
                .channels
                .values()
                .filter_map(|c| c.counters.last_payload_ms())
                .max();
            f(e.meta.id, last);
        }
    }

    /// Every authenticated connection, with who logged in and what they reach.
    pub fn logins(&self) -> Vec<LiveLogin> {
        self.lock()
            .values()
            .filter_map(|e| {
                Some(LiveLogin {
                    id: e.meta.id,
                    principal: e.principal.clone()?,
                    route: e.route.clone()?,
                })
            })
            .collect()
    }

    /// Ends one connection, if it is still there; the first reason given is reported.
    pub fn cancel(&self, id: ConnId, reason: CloseReason) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.reason.get_or_insert(reason);
            e.cancel.cancel();
        }
    }

    /// Ends every connection `pick` selects; returns how many.
    pub fn cancel_where(&self, reason: CloseReason, pick: impl Fn(&ConnInfo) -> bool) -> usize {
        let picked: Vec<ConnId> = self
            .list()
            .into_iter()
            .filter(|c| pick(c))
            .map(|c| c.id)
            .collect();
        let mut conns = self.lock();
        for id in &picked {
            if let Some(e) = conns.get_mut(id) {
                e.reason.get_or_insert(reason);
                e.cancel.cancel();
            }
        }
        picked.len()
    }

    /// Ends every connection (telling each client why) and waits up to `grace` for
    /// all their tasks to finish. Returns whether everything finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        {
            let mut conns = self.lock();
            for e in conns.values_mut() {
                e.reason.get_or_insert(CloseReason::Shutdown);
            }
        }
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// The connection task is done: the connection goes now, or (channels still
    /// finishing) when its last channel does.
    fn remove(&self, id: ConnId) {
        let entry = {
            let mut conns = self.lock();
            let Some(entry) = conns.get_mut(&id) else {
                return;
            };
            entry.cancel.cancel();
            if !entry.channels.is_empty() {
                entry.ended = true;
                return;
            }
            Self::take(&mut conns, id)
        };
        if let Some(entry) = entry {
            self.report_closed(id, entry);
        }
    }

    fn take(conns: &mut HashMap<ConnId, Entry>, id: ConnId) -> Option<Entry> {
        super::remove_and_shrink(conns, &id)
    }

    fn report_closed(&self, id: ConnId, entry: Entry) {
        self.events.emit(Event::Closed {
            conn: id,
            peer: entry.meta.peer,
            reason: entry.reason.unwrap_or(CloseReason::ClientGone),
            lifetime: entry.meta.accepted_at.elapsed(),
            user: entry.principal.map(|p| p.user_name().to_owned()),
        });
    }
}

/// The owner of one connection, held by its connection task.
pub struct Conn {
    handle: ConnRef,
    meta: ConnMeta,
}

impl Conn {
    pub fn meta(&self) -> &ConnMeta {
        &self.meta
    }

    pub fn handle(&self) -> ConnRef {
        self.handle.clone()
    }
}

impl std::ops::Deref for Conn {
    type Target = ConnRef;
    fn deref(&self) -> &ConnRef {
        &self.handle
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.handle.registry.remove(self.handle.id);
    }
}

/// A reference to a live connection, for its handler and channel tasks. Outliving the
/// connection is harmless: every operation on a gone connection is a no-op.
#[derive(Clone)]
pub struct ConnRef {
    registry: Arc<Registry>,
    id: ConnId,
    cancel: CancellationToken,
}

impl ConnRef {
    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Resolves when the connection is being ended (revoked, drained, timed out,
    /// or gone).
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Asks for the connection to end; the first reason given is the one reported.
    pub fn cancel(&self, reason: CloseReason) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            e.reason.get_or_insert(reason);
        }
        self.cancel.cancel();
    }

    /// Records why the connection is ending without cancelling it (it is ending
    /// anyway, e.g. the handler refused it).
    pub fn set_reason(&self, reason: CloseReason) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            e.reason.get_or_insert(reason);
        }
    }

    pub fn key_offered(&self) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            e.keys_offered = true;
        }
    }

    pub fn keys_were_offered(&self) -> bool {
        self.registry
            .lock()
            .get(&self.id)
            .is_some_and(|e| e.keys_offered)
    }

    /// The reason recorded so far, if any.
    pub fn reason(&self) -> Option<CloseReason> {
        self.registry.lock().get(&self.id).and_then(|e| e.reason)
    }

    /// Records who authenticated and what they asked for, and frees the pre-auth slot.
    pub fn authenticated(&self, principal: &Principal, target: &str, route: RouteResult) {
        let (permit, peer) = {
            let mut conns = self.registry.lock();
            let Some(e) = conns.get_mut(&self.id) else {
                return;
            };
            e.principal = Some(principal.clone());
            e.target = Some(target.to_owned());
            e.route = Some(route);
            (e.preauth.take(), e.meta.peer)
        };
        drop(permit);
        self.registry.events.emit(Event::Authenticated {
            conn: self.id,
            peer,
            user_id: principal.user_id().to_owned(),
            user: principal.user_name().to_owned(),
            // A browser terminal logged in with a token: the trail names it instead
            // (`tok_…`), so a session is always traceable to its credential.
            key_id: principal
                .key_id()
                .or(principal.token_id())
                .unwrap_or_default()
                .to_owned(),
            fingerprint: principal.fingerprint().unwrap_or_default().to_owned(),
            certificate: principal.certificate_serial(),
            target: target.to_owned(),
        });
    }

    pub fn is_authenticated(&self) -> bool {
        self.registry
            .lock()
            .get(&self.id)
            .is_some_and(|e| e.principal.is_some())
    }

    /// Registers a channel, unless `max_open` are already open on this connection.
    /// Closed channels free their place at once, so a connection can open channels
    /// for ever (ControlMaster, VS Code).
    pub fn open_channel(
        &self,
        channel: u32,
        kind: &'static str,
        detail: String,
        max_open: usize,
    ) -> Result<ChannelGuard, ChannelLimit> {
        let counters = Arc::new(Counters::default());
        let cancel = self.cancel.child_token();
        // A forward's destination is all it ever does; a session says later.
        let program = detail.clone();
        {
            let mut conns = self.registry.lock();
            let Some(e) = conns.get_mut(&self.id) else {
                return Err(ChannelLimit);
            };
            if e.channels.len() >= max_open {
                return Err(ChannelLimit);
            }
            e.channels.insert(
                channel,
                ChannelEntry {
                    kind,
                    counters: counters.clone(),
                    cancel: cancel.clone(),
                },
            );
        }
        self.registry.events.emit(Event::ChannelOpened {
            conn: self.id,
            channel,
            kind,
            detail,
        });
        Ok(ChannelGuard {
            conn: self.clone(),
            channel,
            kind,
            program,
            recording: std::sync::OnceLock::new(),
            opened_ms: crate::store::now_ms().max(0) as u64,
            counters,
            cancel,
            end: ChannelEnd::Closed,
        })
    }

    /// The client closed `channel`: whatever still runs for it stops.
    pub fn channel_closed_by_client(&self, channel: u32) {
        if let Some(c) = self
            .registry
            .lock()
            .get(&self.id)
            .and_then(|e| e.channels.get(&channel))
        {
            c.cancel.cancel();
        }
    }

    pub fn open_channels(&self) -> usize {
        self.registry
            .lock()
            .get(&self.id)
            .map_or(0, |e| e.channels.len())
    }
}

/// One open channel. Dropping it unregisters the channel and reports its totals.
pub struct ChannelGuard {
    conn: ConnRef,
    channel: u32,
    kind: &'static str,
    /// What it runs or reaches, for the audit record.
    program: String,
    /// Its recording's file, when it is recorded (set from inside the running
    /// session, which holds the guard only shared).
    recording: std::sync::OnceLock<String>,
    opened_ms: u64,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    end: ChannelEnd,
}

impl ChannelGuard {
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Resolves when the channel must stop: closed by the client, or its connection
    /// is ending.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn conn(&self) -> &ConnRef {
        &self.conn
    }

    pub fn set_end(&mut self, end: ChannelEnd) {
        self.end = end;
    }

    /// What the client asked the channel to run (`shell`, `sftp`, a command line).
    pub fn set_program(&mut self, program: String) {
        self.program = program;
    }

    /// The file its session is recorded to (`[recording]`).
    pub fn set_recording(&self, file: String) {
        let _ = self.recording.set(file);
    }
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        // Reported while still registered: a connection task ending meanwhile then
        // finds the channel and leaves the connection's close to this drop, so every
        // subscriber sees a channel's totals before its connection goes (reported the
        // other way round, the audit trail and activity lost the last channel).
        let (bytes_in, bytes_out) = self.counters.snapshot();
        self.conn.registry.events.emit(Event::ChannelClosed {
            conn: self.conn.id,
            channel: self.channel,
            kind: self.kind,
            program: std::mem::take(&mut self.program),
            recording: self.recording.take(),
            opened_ms: self.opened_ms,
            bytes_in,
            bytes_out,
            last_payload_ms: self.counters.last_payload_ms(),
            end: std::mem::replace(&mut self.end, ChannelEnd::Closed),
        });
        let registry = &self.conn.registry;
        let finished = {
            let mut conns = registry.lock();
            match conns.get_mut(&self.conn.id) {
                Some(e) => {
                    e.channels.remove(&self.channel);
                    if e.ended && e.channels.is_empty() {
                        Registry::take(&mut conns, self.conn.id)
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        if let Some(entry) = finished {
            registry.report_closed(self.conn.id, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::admission::{Admission, AdmissionLimits};
    use crate::conn::events::Subscriber;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<&'static str>>);

    impl Subscriber for Recorder {
        fn on_event(&self, event: &Event) {
            let name = match event {
                Event::ChannelClosed { .. } => "channel closed",
                Event::Closed { .. } => "closed",
                _ => return,
            };
            self.0.lock().unwrap().push(name);
        }
    }

    /// One connection admitted and registered; the permit holds its admission slot.
    fn connected(registry: &Arc<Registry>) -> (crate::conn::admission::ConnPermit, Conn) {
        let admission = Admission::new(AdmissionLimits {
            max_connections: 8,
            max_unauthenticated: 8,
            max_unauthenticated_per_source: 8,
            penalty_auth_failure: Duration::ZERO,
            penalty_no_auth: Duration::ZERO,
            penalty_threshold: Duration::from_secs(60),
            penalty_max: Duration::from_secs(60),
            penalty_exempt: Vec::new(),
        });
        let peer: SocketAddr = "192.0.2.1:2222".parse().unwrap();
        let (permit, preauth) = admission.admit(peer.ip()).unwrap();
        (permit, registry.register(peer, preauth))
    }

    /// A connection whose task ends while a channel still finishes is reported closed
    /// after that channel: subscribers (activity, audit) need the channel's totals
    /// while they still know its connection.
    #[test]
    fn a_connection_closes_after_its_last_channel() {
        let recorder = Arc::new(Recorder::default());
        let registry = Registry::new(Events::new(vec![recorder.clone()]));
        let (_conn_permit, conn) = connected(&registry);
        let channel = conn.open_channel(0, "session", String::new(), 4).unwrap();
        drop(conn);
        assert!(
            recorder.0.lock().unwrap().is_empty(),
            "closed before its channel"
        );
        assert_eq!(registry.len(), 1, "still held while its channel finishes");
        drop(channel);
        assert_eq!(*recorder.0.lock().unwrap(), ["channel closed", "closed"]);
        assert!(registry.is_empty());
    }

    /// Ends its connection's task while a channel's close is being reported: the
    /// moment, between a channel task and its connection task, the race happens.
    #[derive(Default)]
    struct EndsTheConnection(Mutex<Option<Conn>>);

    impl Subscriber for EndsTheConnection {
        fn on_event(&self, event: &Event) {
            if let Event::ChannelClosed { .. } = event {
                let conn = self.0.lock().unwrap().take();
                drop(conn);
            }
        }
    }

    /// The connection task ending while its last channel is being reported still
    /// leaves every subscriber the channel before the connection's close (the audit
    /// trail dropped a recorded shell this way, one run in fifteen).
    #[test]
    fn a_connection_ending_during_its_last_channels_close_is_reported_after_it() {
        let ender = Arc::new(EndsTheConnection::default());
        let recorder = Arc::new(Recorder::default());
        let registry = Registry::new(Events::new(vec![ender.clone(), recorder.clone()]));
        let (_conn_permit, conn) = connected(&registry);
        let channel = conn.open_channel(0, "session", String::new(), 4).unwrap();
        *ender.0.lock().unwrap() = Some(conn);
        drop(channel);
        assert_eq!(*recorder.0.lock().unwrap(), ["channel closed", "closed"]);
        assert!(registry.is_empty());
    }
}
