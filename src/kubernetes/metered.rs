//! Every Kubernetes API call, timed and counted into the metrics by kind of call and
//! outcome: a tower layer under kube-rs's client, so lists, gets, patches, watches and
//! the exec and port-forward upgrades are all seen in one place. (A watch or stream is
//! timed to its response head, its set-up.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use tower::Service;

#[derive(Clone)]
pub struct Metered<S>(pub S);

/// What kind of call a request is, from its method and path (bounded labels only).
pub fn kind(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or_default();
    match (method, last) {
        (_, "exec") => "exec",
        (_, "portforward") => "portforward",
        (&Method::GET, _)
            if query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1")) =>
        {
            "watch"
        }
        (&Method::GET, _) => {
            // /api/v1/namespaces/{ns}/pods is a list, …/pods/{name} a get.
            let plural = matches!(last, "pods" | "statefulsets" | "namespaces" | "deployments");
            if plural { "list" } else { "get" }
        }
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::POST, _) => "create",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    }
}

impl<S, B, RB> Service<Request<B>> for Metered<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let kind = kind(req.method(), req.uri().path(), req.uri().query());
        let started = Instant::now();
        let call = self.0.call(req);
        Box::pin(async move {
            let result = call.await;
            let outcome = match &result {
                Ok(r) if r.status().is_server_error() => "server_error",
                Ok(r) if r.status().is_client_error() => "client_error",
                Ok(_) => "ok",
                Err(_) => "transport_error",
            };
            crate::metrics::global().kubernetes_call(kind, outcome, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_named_by_kind() {
        let ns = "/api/v1/namespaces/default";
        assert_eq!(
            kind(
                &Method::GET,
                &format!("{ns}/pods"),
                Some("labelSelector=a%3Db")
            ),
            "list"
        );
        assert_eq!(
            kind(
                &Method::GET,
                &format!("{ns}/pods"),
                Some("watch=true&resourceVersion=1")
            ),
            "watch"
        );
        assert_eq!(
            kind(&Method::GET, &format!("{ns}/pods/sandbox-a"), None),
            "get"
        );
        assert_eq!(
            kind(
                &Method::GET,
                &format!("{ns}/pods/sandbox-a/exec"),
                Some("command=sh")
            ),
            "exec"
        );
        assert_eq!(
            kind(
                &Method::GET,
                &format!("{ns}/pods/p/portforward"),
                Some("ports=22")
            ),
            "portforward"
        );
        assert_eq!(
            kind(
                &Method::PATCH,
                "/apis/apps/v1/namespaces/default/statefulsets/s",
                None
            ),
            "patch"
        );
        assert_eq!(
            kind(
                &Method::GET,
                "/apis/apps/v1/namespaces/default/statefulsets",
                None
            ),
            "list"
        );
    }
}
