//! The HTTP control plane: a platform's own service says who may use a target and in
//! what state it is, wakes it on request, and hears how it is used. The contract is
//! docs/control-plane.openapi.yaml (served at `GET /control-plane.openapi.yaml`):
//!
//! - `GET  {url}/v1/sandboxes/{id}` → 200 `{"id","state","owner","members"}`, 404
//! - `POST {url}/v1/sandboxes/{id}/resume` → 202, idempotent; then the GET is asked
//!   with `?wait=10`, which a platform may hold until the state changes (long-poll);
//!   one that answers at once is polled (100 ms, growing to 2 s)
//! - `POST {url}/v1/sandboxes/{id}/activity` → 204
//!
//! Where the workload runs stays the backend's business (`Workloads`). Every call
//! carries the bearer token; 5xx answers and transport failures are retried with
//! exponential backoff and full jitter within a budget, 4xx answers never are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use tracing::{info, warn};

use super::resume::{Progress, Resumes};
use super::{
    Activity, ActivityEvent, ControlError, ControlPlane, KubernetesControlPlane, Principal, Target,
    TargetInfo, local_target, rfc3339_ms,
};
use crate::config::HttpControlConfig;
use crate::route::TargetRef;

/// Largest answer body read from the control plane.
const MAX_BODY: usize = 64 * 1024;
/// First retry delay; doubled per attempt, capped at `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a resume re-reads the state: from `FIRST_POLL`, growing to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(2);
/// While resuming, each GET asks the platform to hold its answer up to this long
/// until the state changes (`?wait=`); one that answers at once is polled instead.
const LONG_POLL: Duration = Duration::from_secs(10);

/// Where targets run once the control plane has said who may use them.
pub enum Workloads {
    /// Local processes in `<root>/<id>`.
    Local { root: PathBuf },
    /// Pods found by the target's labels (`[kubernetes]`); access is not read from
    /// them.
    Pods(Arc<KubernetesControlPlane>),
}

pub struct HttpControlPlane {
    api: Client,
    workloads: Workloads,
    resumes: Resumes,
    resume_timeout: Duration,
}

/// A target's state as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Running,
    Starting,
    Paused,
    Stopped,
    Failed,
}

#[derive(Debug, Deserialize)]
struct Sandbox {
    id: String,
    state: State,
    owner: String,
    #[serde(default)]
    members: Vec<String>,
}

impl Sandbox {
    fn allows(&self, who: &Principal) -> bool {
        self.owner == who.user_name() || self.members.iter().any(|m| m == who.user_name())
    }
}

/// Why a call failed, for the log (the user hears `ControlError`'s wording).
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    #[error("{0}")]
    Transport(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl From<CallError> for ControlError {
    fn from(e: CallError) -> Self {
        ControlError::Unavailable(e.to_string())
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    request_timeout: Duration,
    retry_budget: Duration,
}

impl HttpControlPlane {
    /// Runs resumes on the gateway's task tracker, ending them when `stop` fires.
    pub fn owned_by(
        mut self,
        tasks: tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        self.resumes = Resumes::owned(tasks, stop);
        self
    }

    pub fn new(config: &HttpControlConfig, workloads: Workloads) -> anyhow::Result<Self> {
        let token = match &config.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("reading control.token_file {}: {e}", path.display())
                })?;
                let token = text.trim_end().to_owned();
                if token.is_empty() || token.chars().any(|c| c.is_control()) {
                    anyhow::bail!(
                        "control.token_file {} must hold one token on one line",
                        path.display()
                    );
                }
                Some(token)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls_client::config(None)?)
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            api: Client {
                http,
                base: config.url.trim_end_matches('/').to_owned(),
                token,
                request_timeout: config.request_timeout(),
                retry_budget: config.retry_budget(),
            },
            workloads,
            resumes: Resumes::default(),
            resume_timeout: config.resume_timeout(),
        })
    }

    /// The platform's word on `target`, if `who` may use it; otherwise the refusal
    /// that does not say whether it exists.
    async fn authorized(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<Sandbox, ControlError> {
        match self.api.sandbox(&target.name()).await? {
            Some(sandbox) if sandbox.allows(who) => Ok(sandbox),
            _ => Err(ControlError::NoAccess(target.name())),
        }
    }

    async fn locate(&self, who: &Principal, target: &TargetRef) -> Result<Target, ControlError> {
        match &self.workloads {
            Workloads::Local { root } => {
                local_target(target.name(), root.join(target.name())).await
            }
            Workloads::Pods(kube) => kube.locate(who, target).await,
        }
    }
}

fn state_refusal(target: &TargetRef, state: State) -> ControlError {
    let what = match state {
        State::Stopped => "is stopped; start it from your platform, then connect again",
        State::Failed => "has failed; see your platform for why, then connect again",
        State::Running | State::Starting | State::Paused => "is not ready",
    };
    ControlError::NotReady(format!("{target} {what}"))
}

#[async_trait::async_trait]
impl ControlPlane for HttpControlPlane {
    async fn resolve(&self, who: &Principal, target: &TargetRef) -> Result<Target, ControlError> {
        let sandbox = self.authorized(who, target).await?;
        match sandbox.state {
            State::Running => self.locate(who, target).await,
            State::Paused | State::Starting => Err(ControlError::Paused(target.name())),
            state => Err(state_refusal(target, state)),
        }
    }

    async fn resume(
        &self,
        who: &Principal,
        target: &TargetRef,
        notes: Option<&tokio::sync::mpsc::Sender<String>>,
    ) -> Result<Duration, ControlError> {
        // Authorization first: an unknown or forbidden id never wakes anything.
        let sandbox = self.authorized(who, target).await?;
        let ask = match sandbox.state {
            State::Running => return Ok(Duration::ZERO),
            State::Paused => true,
            State::Starting => false,
            state => return Err(state_refusal(target, state)),
        };
        if let Some(notes) = notes {
            let what = if ask {
                "is paused; resuming it"
            } else {
                "is starting; waiting for it"
            };
            let _ = notes.send(format!("{} {what}", target.name())).await;
        }
        let wake = Wake {
            api: self.api.clone(),
            id: target.name(),
            ask,
            limit: self.resume_timeout,
        };
        info!(%target, account = %who.user_name(), "resuming through the control plane");
        self.resumes
            .join(&target.name(), move |progress| wake.run(progress), notes)
            .await
            .map_err(|reason| {
                ControlError::NotReady(format!("{target} could not be resumed: {reason}"))
            })
    }

    async fn report_activity(&self, target: &str, activity: &Activity) -> Result<(), ControlError> {
        let mut body = serde_json::json!({
            "event": activity.event.as_str(),
            "open_sessions": activity.open_sessions,
            "last_payload_at": activity.last_payload_ms.and_then(rfc3339_ms),
        });
        if let ActivityEvent::Disconnect { reason } = &activity.event {
            body["reason"] = reason.clone().into();
        }
        self.api
            .call(reqwest::Method::POST, &[target, "activity"], Some(&body))
            .await?;
        Ok(())
    }

    /// `POST …/pause`: the platform, which hears from every replica, has the last word.
    async fn pause_idle(&self, target: &str, _quiet_since_ms: u64) -> Result<bool, ControlError> {
        self.api
            .call(reqwest::Method::POST, &[target, "pause"], None)
            .await?;
        Ok(true)
    }

    async fn describe(
        &self,
        who: &Principal,
        target: &TargetRef,
    ) -> Result<TargetInfo, ControlError> {
        let sandbox = self.authorized(who, target).await?;
        Ok(TargetInfo {
            id: sandbox.id,
            owner: sandbox.owner,
            status: match sandbox.state {
                State::Running => "running",
                State::Starting => "starting",
                State::Paused => "paused",
                State::Stopped => "stopped",
                State::Failed => "failed",
            },
            created_at: 0,
        })
    }
}

/// One resume: ask (unless it is on its way already), then read the state until it
/// is running, with a growing interval, within the timeout.
struct Wake {
    api: Client,
    id: String,
    ask: bool,
    limit: Duration,
}

impl Wake {
    async fn run(self, progress: Progress) -> Result<Duration, String> {
        let started = Instant::now();
        progress
            .within(self.limit, self.until_running(&progress), |secs, last| {
                format!(
                    "it did not start within {secs} s (last state: {}); check it on your platform",
                    last.unwrap_or_else(|| "paused".into())
                )
            })
            .await?;
        Ok(started.elapsed())
    }

    async fn until_running(&self, progress: &Progress) -> Result<(), String> {
        if self.ask {
            progress.note("asking the control plane to resume it");
            self.api
                .call(reqwest::Method::POST, &[&self.id, "resume"], None)
                .await
                .map_err(|e| {
                    warn!(target = %self.id, error = %e, "resume request failed");
                    "the control plane refused or did not answer the resume request (see the gateway's log)".to_owned()
                })?;
        }
        let mut wait = FIRST_POLL;
        loop {
            let asked = Instant::now();
            let sandbox = self.api.sandbox_when_changed(&self.id).await.map_err(|e| {
                warn!(target = %self.id, error = %e, "reading state during resume failed");
                "the control plane stopped answering while it was resuming".to_owned()
            })?;
            match sandbox.map(|s| s.state) {
                Some(State::Running) => return Ok(()),
                Some(State::Starting) => progress.note("starting"),
                Some(State::Paused) => progress.note("paused, waiting for the resume to begin"),
                Some(State::Stopped) => return Err("it was stopped meanwhile".into()),
                Some(State::Failed) => return Err("it failed to start".into()),
                None => return Err("it no longer exists".into()),
            }
            // A platform that held the answer (long-poll) is asked again at once; one
            // that answered at once, after the interval.
            tokio::time::sleep(wait.saturating_sub(asked.elapsed())).await;
            wait = (wait * 3 / 2).min(MAX_POLL);
        }
    }
}

impl Client {
    async fn sandbox(&self, id: &str) -> Result<Option<Sandbox>, CallError> {
        self.read_sandbox(id, None).await
    }

    /// The state, held by the platform until it is no longer `paused`/`starting` or
    /// `LONG_POLL` has passed, if it supports `?wait=`.
    async fn sandbox_when_changed(&self, id: &str) -> Result<Option<Sandbox>, CallError> {
        self.read_sandbox(id, Some(LONG_POLL)).await
    }

    async fn read_sandbox(
        &self,
        id: &str,
        wait: Option<Duration>,
    ) -> Result<Option<Sandbox>, CallError> {
        let Some(body) = self
            .call_waiting(reqwest::Method::GET, &[id], None, wait)
            .await?
        else {
            return Ok(None);
        };
        let sandbox: Sandbox =
            serde_json::from_slice(&body).map_err(|e| CallError::Malformed(e.to_string()))?;
        // Decide on exactly the object asked about.
        if sandbox.id != id {
            return Err(CallError::Malformed(format!(
                "asked for {id:?}, the answer is about {:?}",
                sandbox.id
            )));
        }
        Ok(Some(sandbox))
    }

    /// One call, retried on 5xx and transport errors within the retry budget. A GET
    /// answered 404 is `None`; every other 4xx is an error at once.
    async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<Option<Vec<u8>>, CallError> {
        self.call_waiting(method, segments, body, None).await
    }

    /// `call`, with `?wait=<secs>` and that much longer to answer, when `wait` is set.
    async fn call_waiting(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
        wait: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, CallError> {
        let mut url = format!("{}/v1/sandboxes", self.base);
        for segment in segments {
            url.push('/');
            url.push_str(&encode_segment(segment));
        }
        if let Some(wait) = wait {
            url.push_str(&format!("?wait={}", wait.as_secs()));
        }
        let deadline = Instant::now() + self.retry_budget;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(wait) = wait {
                request = request.timeout(self.request_timeout + wait);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let attempt = Instant::now();
            let sent = request.send().await;
            let error_kind = match &sent {
                Ok(r) if r.status().is_server_error() => Some("status_5xx"),
                Ok(r)
                    if r.status().is_client_error()
                        && r.status() != reqwest::StatusCode::NOT_FOUND =>
                {
                    Some("status_4xx")
                }
                Ok(_) => None,
                Err(_) => Some("transport"),
            };
            crate::metrics::global().control_call(attempt.elapsed(), error_kind);
            let failure = match sent {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return read_limited(response).await.map(Some);
                    }
                    if status == reqwest::StatusCode::NOT_FOUND && method == reqwest::Method::GET {
                        return Ok(None);
                    }
                    let text = read_limited(response)
                        .await
                        .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                        .unwrap_or_default();
                    let error = CallError::Status(status.as_u16(), text);
                    if !status.is_server_error() {
                        return Err(error);
                    }
                    error
                }
                Err(e) => CallError::Transport(without_url(&e)),
            };
            // Full jitter: a fleet of gateways retrying one outage spreads out.
            let pause = rand::rng().random_range(Duration::ZERO..=backoff);
            if Instant::now() + pause >= deadline {
                return Err(failure);
            }
            warn!(%method, path = %segments.join("/"), error = %failure, retry_in_ms = pause.as_millis() as u64, "control plane call failed; retrying");
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// reqwest's errors carry the URL; the message is enough (and the base URL is in the
/// config anyway).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CallError::Transport(without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CallError::Malformed(format!(
                "answer larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("demo-1_x.y~"), "demo-1_x.y~");
        assert_eq!(encode_segment("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn answers_parse_strictly_on_state() {
        let ok: Sandbox = serde_json::from_str(
            r#"{"id":"demo","state":"paused","owner":"alice","members":["bob"],"extra":1}"#,
        )
        .unwrap();
        assert_eq!(ok.state, State::Paused);
        assert!(
            serde_json::from_str::<Sandbox>(r#"{"id":"demo","state":"sleeping","owner":"a"}"#)
                .is_err()
        );
        let none: Sandbox =
            serde_json::from_str(r#"{"id":"demo","state":"running","owner":"a"}"#).unwrap();
        assert!(none.members.is_empty());
    }
}
