//! `kube-emulator --listen ADDR --kubeconfig FILE`: run the emulator by hand and point
//! kubectl or the gateway at it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_emulator::{Emulator, Options, Rbac, ServiceAccount};

#[derive(Parser)]
#[command(
    name = "kube-emulator",
    about = "A Kubernetes API emulator that runs local processes"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the emulator here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Directory holding the pods' working directories.
    #[arg(long, default_value = "kube-emulator-data")]
    root: PathBuf,
    /// Require this bearer token (written into the kubeconfig).
    #[arg(long)]
    token: Option<String>,
    /// Milliseconds a StatefulSet's new pod stays Pending.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
    /// RBAC objects (Role, RoleBinding, ClusterRole, ClusterRoleBinding) as JSON: one
    /// object, a list, or a `kind: List`; namespaced ones without a namespace are in
    /// `default`. Requests with a `--service-account` token are authorized by them.
    #[arg(long)]
    rbac: Option<PathBuf>,
    /// `TOKEN=NAMESPACE/NAME`: this bearer token authenticates as that ServiceAccount
    /// (repeatable; needs `--rbac`).
    #[arg(long, value_name = "TOKEN=NAMESPACE/NAME")]
    service_account: Vec<String>,
}

fn load_rbac(path: &std::path::Path, accounts: &[String]) -> anyhow::Result<Rbac> {
    let text = std::fs::read_to_string(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let objects = match &value {
        serde_json::Value::Array(items) => items.clone(),
        v if v["kind"] == "List" => v["items"].as_array().cloned().unwrap_or_default(),
        v => vec![v.clone()],
    };
    let mut rbac = Rbac::from_objects(&objects, "default").map_err(anyhow::Error::msg)?;
    for spec in accounts {
        let parsed = spec
            .split_once('=')
            .and_then(|(token, sa)| Some((token, sa.split_once('/')?)));
        let Some((token, (namespace, name))) = parsed else {
            anyhow::bail!("--service-account {spec:?}: expected TOKEN=NAMESPACE/NAME");
        };
        rbac = rbac.with_service_account(token, ServiceAccount::new(namespace, name));
    }
    Ok(rbac)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rbac = match &cli.rbac {
        Some(path) => Some(load_rbac(path, &cli.service_account)?),
        None if !cli.service_account.is_empty() => {
            anyhow::bail!("--service-account needs --rbac")
        }
        None => None,
    };
    let emulator = Emulator::start(Options {
        listen: cli.listen,
        root: cli.root,
        token: cli.token,
        rbac,
        start_delay: Duration::from_millis(cli.start_delay_ms),
    })
    .await?;
    if let Some(path) = &cli.kubeconfig {
        emulator.write_kubeconfig(path)?;
        println!("kubeconfig written to {}", path.display());
    }
    println!("kube-emulator listening on {}", emulator.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
