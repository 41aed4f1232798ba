//! Talking to a Kubernetes API server: the client (kubeconfig or in-cluster), and the
//! two streaming protocols the gateway speaks itself — pods/exec and pods/portforward
//! channels over WebSocket, with its own framing (`ws`) on the socket kube-rs upgrades.

pub mod exec;
mod metered;
pub mod portforward;
pub mod ws;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("configuring the Kubernetes client: {0}")]
    Config(String),
}

/// A client for the configured cluster. Connect timeouts are set here; each call is
/// additionally bounded by `request_timeout_secs` where it is made, since streams must
/// not time out while idle.
pub async fn client(config: &KubernetesConfig) -> Result<kube::Client, ClientError> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| ClientError::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let options = KubeConfigOptions {
                context: config.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| ClientError::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::Config(e.to_string()))?,
    };
    kube_config.connect_timeout = Some(config.request_timeout());
    // No read timeout: exec and port-forward streams sit idle for hours.
    kube_config.read_timeout = None;
    let builder = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    Ok(builder
        .with_layer(&tower::layer::layer_fn(metered::Metered))
        .build())
}
