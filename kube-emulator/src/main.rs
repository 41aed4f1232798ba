//! `kube-emulator --listen ADDR --kubeconfig FILE`: run the emulator by hand and point
//! kubectl or the gateway at it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_emulator::{Emulator, Options};

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
    let emulator = Emulator::start(Options {
        listen: cli.listen,
        root: cli.root,
        token: cli.token,
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
