//! Wake-on-connect overhead: `ssh <paused sandbox> true` against a StatefulSet at 0
//! replicas whose pod the emulator makes Ready a fixed delay after the scale-up. The
//! overhead is the time to the finished command minus that delay (the control plane's
//! own time to ready) minus an ordinary `ssh <running sandbox> true`: what the gateway
//! adds by resuming (its extra lookups, the scale call, noticing Ready on the watch).
//!
//!     cargo bench --bench wake            # WAKE_RUNS=7 paused sandboxes
//!
//! Not run by CI.

mod common;

use std::time::Duration;

use common::{client_key, env_usize, median, start_kube_gateway_with, timed};

const CIPHER: &str = "aes128-gcm@openssh.com";
/// The emulator's time from a pod's creation to Running and Ready.
const READY_AFTER: Duration = Duration::from_millis(1000);

fn main() {
    let runs = env_usize("WAKE_RUNS", 7);
    let dir = tempfile::Builder::new()
        .prefix("sgw-wake-bench")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let (client, pubkey) = client_key(dir);
    let gw = start_kube_gateway_with(
        dir,
        pubkey.trim(),
        "gateway (Kubernetes)",
        "wake",
        "",
        READY_AFTER,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The running sandbox `bench` from the harness, for an ordinary connection's cost.
    let ordinary: Vec<f64> = (0..runs * 3)
        .map(|_| ms(timed(client.ssh_as(&gw, CIPHER, "bench", "true"), None)))
        .collect();
    let mut woken = Vec::new();
    for i in 0..runs {
        let id = format!("paused{i}");
        gw.add_paused(&id);
        std::thread::sleep(Duration::from_millis(100));
        woken.push(ms(timed(client.ssh_as(&gw, CIPHER, &id, "true"), None)));
    }
    let (o, w) = (median(ordinary), median(woken));
    let ready = ms(READY_AFTER);
    println!("\n{runs} paused sandboxes, pod Ready {ready:.0} ms after creation, medians\n");
    println!(
        "| `ssh running true` | `ssh paused true` | control plane's time to ready | wake overhead |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {o:.1} ms | {w:.1} ms | {ready:.0} ms | {:.1} ms |",
        w - ready - o
    );
}
