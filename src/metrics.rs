//! Prometheus metrics, served as text at `GET /metrics` on the API listener. Most come
//! from the connection event stream (`MetricsSubscriber`); auth, resumes and
//! control-plane calls record where they happen, through `global()`. Every label has
//! a fixed, small set of values: reasons, kinds, methods, never a user, key or target.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::conn::events::{ChannelEnd, CloseReason, Event, Rejection, Subscriber};

pub struct Metrics {
    registry: Registry,
    accepted: IntCounter,
    refused: IntCounterVec,
    closed: IntCounterVec,
    active_connections: IntGauge,
    connection_seconds: Histogram,
    auth: IntCounterVec,
    channels_opened: IntCounterVec,
    channels_closed: IntCounterVec,
    active_channels: IntGaugeVec,
    bytes: IntCounterVec,
    bytes_sync: std::sync::Mutex<()>,
    resumes: IntCounterVec,
    resume_seconds: Histogram,
    control_requests: HistogramVec,
    control_errors: IntCounterVec,
    audit_dropped: IntCounterVec,
    recording_dropped: IntCounter,
    revocations: IntCounterVec,
    kubernetes_requests: HistogramVec,
}

/// One set per process: what the event stream, auth and control planes record into.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let active_connections =
            IntGauge::new("ssh_gateway_connections_active", "Open SSH connections.")
                .expect("valid metric");
        r.register(Box::new(active_connections.clone()))
            .expect("registered once");
        let active_channels = IntGaugeVec::new(
            Opts::new("ssh_gateway_channels_active", "Open SSH channels, by kind."),
            &["kind"],
        )
        .expect("valid metric");
        r.register(Box::new(active_channels.clone()))
            .expect("registered once");
        let control_requests = HistogramVec::new(
            HistogramOpts::new(
                "ssh_gateway_control_plane_request_seconds",
                "Control-plane HTTP calls (each attempt), by outcome.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 8).expect("buckets")),
            &["outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(control_requests.clone()))
            .expect("registered once");
        let kubernetes_requests = HistogramVec::new(
            HistogramOpts::new(
                "ssh_gateway_kubernetes_request_seconds",
                "Kubernetes API calls (to the response head for streams and watches), by kind of call and outcome.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 8).expect("buckets")),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(kubernetes_requests.clone()))
            .expect("registered once");
        Self {
            accepted: counter(
                &r,
                "ssh_gateway_connections_accepted_total",
                "SSH connections admitted (past the admission limits).",
            ),
            refused: counter_vec(
                &r,
                "ssh_gateway_connections_refused_total",
                "SSH connections refused at accept, by reason (the admission limits, PROXY protocol).",
                &["reason"],
            ),
            closed: counter_vec(
                &r,
                "ssh_gateway_connections_closed_total",
                "SSH connections ended, by reason.",
                &["reason"],
            ),
            active_connections,
            connection_seconds: histogram(
                &r,
                "ssh_gateway_connection_duration_seconds",
                "How long SSH connections lasted.",
                prometheus::exponential_buckets(0.01, 4.0, 10).expect("buckets"),
            ),
            auth: counter_vec(
                &r,
                "ssh_gateway_auth_attempts_total",
                "Public-key and certificate authentication attempts, by method and outcome.",
                &["method", "outcome"],
            ),
            channels_opened: counter_vec(
                &r,
                "ssh_gateway_channels_opened_total",
                "SSH channels opened, by kind.",
                &["kind"],
            ),
            channels_closed: counter_vec(
                &r,
                "ssh_gateway_channels_closed_total",
                "SSH channels closed, by kind and how they ended.",
                &["kind", "end"],
            ),
            active_channels,
            bytes: counter_vec(
                &r,
                "ssh_gateway_channel_bytes_total",
                "Payload bytes of channels as they move, by direction (in: from clients).",
                &["direction"],
            ),
            bytes_sync: std::sync::Mutex::new(()),
            resumes: counter_vec(
                &r,
                "ssh_gateway_resumes_total",
                "Workload resumes (wake on connect), by outcome.",
                &["outcome"],
            ),
            resume_seconds: histogram(
                &r,
                "ssh_gateway_resume_duration_seconds",
                "How long resumes took, from asking to ready.",
                prometheus::exponential_buckets(0.05, 2.0, 12).expect("buckets"),
            ),
            control_requests,
            control_errors: counter_vec(
                &r,
                "ssh_gateway_control_plane_errors_total",
                "Failed control-plane HTTP calls (each attempt), by kind.",
                &["kind"],
            ),
            recording_dropped: counter(
                &r,
                "ssh_gateway_recording_chunks_dropped_total",
                "Terminal output chunks left out of session recordings because their writer fell behind.",
            ),
            audit_dropped: counter_vec(
                &r,
                "ssh_gateway_audit_records_dropped_total",
                "Audit records not stored, by why (`queue_full`: writes fell behind; `store_error`).",
                &["why"],
            ),
            revocations: counter_vec(
                &r,
                "ssh_gateway_revocations_total",
                "Live connections ended by a revocation, by what was taken away.",
                &["what"],
            ),
            kubernetes_requests,
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        // Bring the byte counters up to the process totals (which only grow, so the
        // counters stay monotonic whoever else reads them).
        // One scrape at a time, or two could both add the same difference.
        let _one = self
            .bytes_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (to_workload, from_workload) = crate::conn::payload_totals();
        for (direction, total) in [("in", to_workload), ("out", from_workload)] {
            let counter = self.bytes.with_label_values(&[direction]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// An authentication attempt: `method` is `publickey` or `certificate`.
    pub fn auth(&self, method: &'static str, outcome: &'static str) {
        self.auth.with_label_values(&[method, outcome]).inc();
    }

    pub fn resume(&self, result: &Result<std::time::Duration, String>, took: std::time::Duration) {
        let outcome = if result.is_ok() { "ready" } else { "failed" };
        self.resumes.with_label_values(&[outcome]).inc();
        if result.is_ok() {
            self.resume_seconds.observe(took.as_secs_f64());
        }
    }

    /// One Kubernetes API call: `kind` (list, get, watch, patch, exec, portforward, …)
    /// and `outcome` (ok, client_error, server_error, transport_error).
    pub fn kubernetes_call(
        &self,
        kind: &'static str,
        outcome: &'static str,
        took: std::time::Duration,
    ) {
        self.kubernetes_requests
            .with_label_values(&[kind, outcome])
            .observe(took.as_secs_f64());
    }

    /// An audit record lost: `queue_full` or `store_error`.
    pub fn recording_dropped(&self) {
        self.recording_dropped.inc();
    }

    pub fn audit_dropped(&self, why: &'static str) {
        self.audit_dropped.with_label_values(&[why]).inc();
    }

    /// A live connection ended by a revocation: `key`, `certificate`, `account`, `access`.
    pub fn revoked(&self, what: &'static str) {
        self.revocations.with_label_values(&[what]).inc();
    }

    /// One control-plane HTTP attempt; `error`: `status_4xx`, `status_5xx`, `transport`.
    pub fn control_call(&self, took: std::time::Duration, error: Option<&'static str>) {
        self.control_requests
            .with_label_values(&[error.map_or("ok", |_| "error")])
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.control_errors.with_label_values(&[kind]).inc();
        }
    }
}

fn rejection_label(r: Rejection) -> &'static str {
    match r {
        Rejection::ConnectionCap => "connection_cap",
        Rejection::UnauthenticatedCap => "unauthenticated_cap",
        Rejection::SourceCap => "source_cap",
        Rejection::Penalized => "penalized",
        Rejection::UntrustedProxy => "untrusted_proxy",
        Rejection::BadProxyHeader => "bad_proxy_header",
    }
}

fn close_label(r: CloseReason) -> &'static str {
    match r {
        CloseReason::ClientGone => "client_closed",
        CloseReason::LoginTimeout => "login_timeout",
        CloseReason::TooManyAuthAttempts => "too_many_auth_attempts",
        CloseReason::ProtocolError => "protocol_error",
        CloseReason::Shutdown => "shutdown",
        CloseReason::Revoked(_) => "revoked",
        CloseReason::Idle => "idle",
    }
}

fn end_label(e: &ChannelEnd) -> &'static str {
    match e {
        ChannelEnd::Exit(0) => "exit_ok",
        ChannelEnd::Exit(_) => "exit_error",
        ChannelEnd::Signal(_) => "signal",
        ChannelEnd::Refused => "refused",
        ChannelEnd::Closed => "closed",
    }
}

/// Feeds the event stream into `global()`.
#[derive(Default)]
pub struct MetricsSubscriber;

impl Subscriber for MetricsSubscriber {
    fn on_event(&self, event: &Event) {
        let m = global();
        match event {
            Event::Accepted { .. } => {
                m.accepted.inc();
                m.active_connections.inc();
            }
            Event::Rejected { reason, .. } => {
                m.refused
                    .with_label_values(&[rejection_label(*reason)])
                    .inc();
            }
            Event::Authenticated { .. } => {}
            Event::ChannelOpened { kind, .. } => {
                m.channels_opened.with_label_values(&[kind]).inc();
                m.active_channels.with_label_values(&[kind]).inc();
            }
            Event::ChannelClosed { kind, end, .. } => {
                m.channels_closed
                    .with_label_values(&[kind, end_label(end)])
                    .inc();
                m.active_channels.with_label_values(&[kind]).dec();
            }
            Event::Closed {
                reason, lifetime, ..
            } => {
                m.closed.with_label_values(&[close_label(*reason)]).inc();
                m.active_connections.dec();
                m.connection_seconds.observe(lifetime.as_secs_f64());
            }
        }
    }
}
