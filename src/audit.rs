//! Audit stage: turns the connection event stream into the store's audit rows (one
//! per authenticated connection, one per channel) without ever slowing a connection.
//! Events are called inline, so the subscriber only queues plain records on a
//! bounded channel; one writer task stores them. A full queue drops the record and
//! counts it (`ssh_gateway_audit_records_dropped_total`) rather than wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::conn::ConnId;
use crate::conn::events::{ChannelEnd, Event, Subscriber};
use crate::store::{AuditChannel, AuditConnection, Store, new_id, now_ms};

/// Records waiting for the writer: a burst of thousands of connections fits.
const QUEUE: usize = 16 * 1024;
/// How long the writer may take to store what is queued once the gateway stops.
const FLUSH: Duration = Duration::from_secs(5);
/// Longest command line kept (exec requests are capped well above what people type).
const MAX_PROGRAM: usize = 4096;

use crate::store::AuditRecord as Record;

/// Records stored per transaction at most.
const BATCH: usize = 512;
/// How long the first record of a batch waits for more. In a burst of logins the
/// writer would otherwise wake for every few records and pay a commit (an fsync on
/// SQLite) each time; records reach the table this much later at most, unless a
/// reader asks for them sooner (`AuditSubscriber::flushed`).
const LINGER: Duration = Duration::from_millis(50);

/// What the writer's queue carries: records, and readers waiting for everything
/// queued before them to be stored.
// Nearly every item is a record, which would only gain an allocation from boxing.
#[allow(clippy::large_enum_variant)]
enum Item {
    Record(Record),
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The audit id and running byte totals of one authenticated connection.
struct Open {
    id: String,
    bytes_in: u64,
    bytes_out: u64,
}

pub struct AuditSubscriber {
    queue: mpsc::Sender<Item>,
    open: Mutex<HashMap<ConnId, Open>>,
}

/// The writer's end: run it with `write`, and `finish` it at shutdown.
pub struct AuditWriter {
    rx: mpsc::Receiver<Item>,
    store: Store,
    /// This gateway process, as its connections' records name it.
    instance: String,
}

/// A new id for this gateway process (`gw_…`), which its audit records carry.
pub fn instance_id() -> String {
    new_id("gw")
}

pub fn audit(store: Store, instance: String) -> (Arc<AuditSubscriber>, AuditWriter) {
    let (queue, rx) = mpsc::channel(QUEUE);
    (
        Arc::new(AuditSubscriber {
            queue,
            open: Mutex::new(HashMap::new()),
        }),
        AuditWriter {
            rx,
            store,
            instance,
        },
    )
}

fn db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn outcome(end: &ChannelEnd) -> (String, Option<i64>) {
    match end {
        ChannelEnd::Exit(code) => ("exit".to_owned(), Some(i64::from(*code))),
        ChannelEnd::Signal(name) => (format!("signal {name}"), None),
        ChannelEnd::Refused => ("refused".to_owned(), None),
        ChannelEnd::Closed => ("closed".to_owned(), None),
    }
}

fn clipped(program: &str) -> String {
    if program.len() <= MAX_PROGRAM {
        return program.to_owned();
    }
    let mut end = MAX_PROGRAM;
    while !program.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &program[..end])
}

impl AuditSubscriber {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, record: Record) {
        if self.queue.try_send(Item::Record(record)).is_err() {
            crate::metrics::global().audit_dropped("queue_full");
        }
    }

    /// Waits (at most `within`) until every record queued before this call is
    /// stored, so a user who lists their sessions sees the one they just opened
    /// rather than what the table held `LINGER` ago. Records of other gateway
    /// processes are not waited for.
    pub async fn flushed(&self, within: Duration) {
        let (done, stored) = tokio::sync::oneshot::channel();
        let _ = tokio::time::timeout(within, async {
            if self.queue.send(Item::Barrier(done)).await.is_ok() {
                let _ = stored.await;
            }
        })
        .await;
    }
}

impl Subscriber for AuditSubscriber {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Authenticated {
                conn,
                peer,
                user_id,
                user,
                key_id,
                fingerprint,
                certificate,
                target,
            } => {
                let id = new_id("ses");
                self.open().insert(
                    *conn,
                    Open {
                        id: id.clone(),
                        bytes_in: 0,
                        bytes_out: 0,
                    },
                );
                self.queue(Record::Open(AuditConnection {
                    id,
                    user_id: user_id.clone(),
                    user_name: user.clone(),
                    key_id: key_id.clone(),
                    key_fingerprint: fingerprint.clone(),
                    certificate_serial: certificate.map(db),
                    source_address: peer.to_string(),
                    target: target.clone(),
                    started_at: now_ms(),
                    ended_at: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    close_reason: None,
                    channels: Vec::new(),
                }));
            }
            Event::ChannelClosed {
                conn,
                channel,
                kind,
                program,
                recording,
                opened_ms,
                bytes_in,
                bytes_out,
                end,
                ..
            } => {
                let id = {
                    let mut open = self.open();
                    let Some(o) = open.get_mut(conn) else { return };
                    o.bytes_in += bytes_in;
                    o.bytes_out += bytes_out;
                    o.id.clone()
                };
                let (outcome, exit_status) = outcome(end);
                self.queue(Record::Channel(
                    id,
                    AuditChannel {
                        channel: i64::from(*channel),
                        kind: (*kind).to_owned(),
                        program: clipped(program),
                        started_at: db(*opened_ms),
                        ended_at: now_ms(),
                        bytes_in: db(*bytes_in),
                        bytes_out: db(*bytes_out),
                        exit_status,
                        outcome,
                        recording: recording.clone(),
                    },
                ));
            }
            Event::Closed { conn, reason, .. } => {
                let o = {
                    let mut open = self.open();
                    let Some(o) = crate::conn::remove_and_shrink(&mut open, conn) else {
                        return;
                    };
                    o
                };
                self.queue(Record::Close {
                    id: o.id,
                    ended_at: now_ms(),
                    bytes: (db(o.bytes_in), db(o.bytes_out)),
                    reason: reason.as_str().to_owned(),
                });
            }
            Event::Accepted { .. } | Event::Rejected { .. } | Event::ChannelOpened { .. } => {}
        }
    }
}

/// Moves what `recv_many` took into records to store and readers to answer.
fn sort(
    items: &mut Vec<Item>,
    batch: &mut Vec<Record>,
    waiting: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) {
    for item in items.drain(..) {
        match item {
            Item::Record(record) => batch.push(record),
            Item::Barrier(reader) => waiting.push(reader),
        }
    }
}

impl AuditWriter {
    /// Stores records as they come, whatever has queued within `LINGER` of the first
    /// in one transaction, until `stop`; then what is still queued (for at most a few
    /// seconds: the drain's last records included).
    pub async fn write(mut self, stop: CancellationToken) {
        let mut failures = 0u64;
        let mut items = Vec::with_capacity(BATCH);
        let mut batch = Vec::with_capacity(BATCH);
        let mut waiting = Vec::new();
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut items, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    sort(&mut items, &mut batch, &mut waiting);
                    let gather = tokio::time::Instant::now() + LINGER;
                    // A waiting reader ends the linger: what it waits for goes now.
                    while batch.len() < BATCH && waiting.is_empty() {
                        let room = BATCH - batch.len();
                        match tokio::time::timeout_at(gather, self.rx.recv_many(&mut items, room)).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => sort(&mut items, &mut batch, &mut waiting),
                        }
                    }
                    self.store_batch(&mut batch, &mut failures).await;
                    for reader in waiting.drain(..) {
                        let _ = reader.send(());
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        let _ = tokio::time::timeout(FLUSH, async {
            while let Ok(item) = self.rx.try_recv() {
                match item {
                    Item::Record(record) => batch.push(record),
                    Item::Barrier(reader) => waiting.push(reader),
                }
                if batch.len() == BATCH {
                    self.store_batch(&mut batch, &mut failures).await;
                }
            }
            self.store_batch(&mut batch, &mut failures).await;
        })
        .await;
    }

    async fn store_batch(&self, batch: &mut Vec<Record>, failures: &mut u64) {
        if batch.is_empty() {
            return;
        }
        let mut last = match self.store.audit_write(batch, &self.instance).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => e,
        };
        let mut n = 0u64;
        if matches!(
            &last,
            crate::store::StoreError::Db(sqlx::Error::Database(_))
        ) {
            // One bad record (a channel whose connection's record was dropped) must
            // not take the batch with it: store them one by one, losing only what
            // fails. (Not when the database is away: each would wait out the pool.)
            for record in batch.drain(..) {
                if let Err(e) = self
                    .store
                    .audit_write(std::slice::from_ref(&record), &self.instance)
                    .await
                {
                    crate::metrics::global().audit_dropped("store_error");
                    n += 1;
                    last = e;
                }
            }
        } else {
            n = batch.len() as u64;
            for _ in batch.drain(..) {
                crate::metrics::global().audit_dropped("store_error");
            }
        }
        let last = (n > 0).then_some(last);
        if let Some(e) = last {
            *failures += 1;
            // The first, then every 100th: an outage would otherwise flood the log.
            if *failures % 100 == 1 {
                warn!(error = %e, failures = *failures, records = n, "could not store audit records");
            }
        }
    }
}

/// The audit trail as `admin sessions` prints it: a line per connection, and an
/// indented line per channel. Names and commands are escaped: a command line is the
/// client's text and may hold terminal control sequences.
pub fn table(sessions: &[AuditConnection]) -> String {
    use crate::keys::Escaped;
    use std::fmt::Write;
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let mut out = String::new();
    for s in sessions {
        let ended = s.ended_at.map_or("open".to_owned(), at);
        let _ = writeln!(
            out,
            "{}  {}  {} -> {}  from {}  key {}  {} .. {}  in {} out {}  {}",
            s.id,
            Escaped(&s.user_name),
            Escaped(&s.key_fingerprint),
            Escaped(&s.target),
            s.source_address,
            s.key_id,
            at(s.started_at),
            ended,
            s.bytes_in,
            s.bytes_out,
            s.close_reason.as_deref().unwrap_or("")
        );
        for c in &s.channels {
            let status = c.exit_status.map(|e| format!(" {e}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "    #{} {} \"{}\"  {} .. {}  in {} out {}  {}{status}",
                c.channel,
                c.kind,
                Escaped(&c.program),
                at(c.started_at),
                at(c.ended_at),
                c.bytes_in,
                c.bytes_out,
                c.outcome
            );
        }
    }
    out
}

/// Tells the store this process is alive, every `orphan_after / 4`, and closes the
/// connections of processes silent for longer than `orphan_after` (a gateway killed
/// with its sessions open), until `stop`.
pub async fn liveness(
    store: Store,
    instance: String,
    orphan_after: Duration,
    stop: CancellationToken,
) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut every = tokio::time::interval((orphan_after / 4).max(Duration::from_millis(250)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(e) = store.instance_alive(&instance, &host).await {
            warn!(error = %e, "could not record this gateway as alive for the audit trail");
            continue;
        }
        let stale =
            now_ms().saturating_sub(i64::try_from(orphan_after.as_millis()).unwrap_or(i64::MAX));
        match store.close_orphans(stale).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                connections = n,
                "closed audit records of a gateway that stopped without closing them"
            ),
            Err(e) => warn!(error = %e, "could not close audit records of stopped gateways"),
        }
    }
}

/// Deletes audit rows older than `retention`, now and every hour, until `stop`.
pub async fn prune(store: Store, retention: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let before =
            now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        match store.prune_audit(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(connections = n, "pruned audit records past retention"),
            Err(e) => warn!(error = %e, "could not prune audit records"),
        }
    }
}
