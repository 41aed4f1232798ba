//! `GET /metrics`: what a real `ssh` session and a refused login move, in Prometheus
//! text, with labels that name reasons and kinds only, never a user or a sandbox.

mod support;

use std::collections::BTreeMap;

use support::{Gateway, http, keygen, run, stderr, stdout};

/// `name{labels} value` lines, keyed by `name{labels}`.
fn scrape(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn metrics(gw: &Gateway) -> (String, BTreeMap<String, f64>) {
    let resp = http()
        .get(format!("{}/metrics", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    let parsed = scrape(&text);
    (text, parsed)
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_and_a_refused_login_show_in_the_metrics() {
    let gw = Gateway::start();
    let (_, before) = metrics(&gw).await;

    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["demo@127.0.0.1", "head -c 5000 /dev/zero"]);
    let out = tokio::task::block_in_place(|| run(cmd));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 5000);

    let stranger = keygen(gw.dir.path(), "stranger", &["-t", "ed25519"]);
    let mut cmd = gw.ssh(&stranger.private);
    cmd.args(["demo@127.0.0.1", "true"]);
    let out = tokio::task::block_in_place(|| run(cmd));
    assert!(!out.status.success(), "{}", stdout(&out));

    // Both connections have closed once their close is recorded; wait for that.
    let mut after = before.clone();
    let mut text = String::new();
    for _ in 0..100 {
        (text, after) = metrics(&gw).await;
        let closed = value(
            &after,
            "ssh_gateway_connections_closed_total{reason=\"client_closed\"}",
        ) - value(
            &before,
            "ssh_gateway_connections_closed_total{reason=\"client_closed\"}",
        );
        if closed >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let grew = |series: &str| value(&after, series) - value(&before, series);
    assert!(
        grew("ssh_gateway_connections_accepted_total") >= 2.0,
        "{text}"
    );
    assert!(
        grew("ssh_gateway_auth_attempts_total{method=\"publickey\",outcome=\"accepted\"}") >= 1.0,
        "{text}"
    );
    assert!(
        grew("ssh_gateway_auth_attempts_total{method=\"publickey\",outcome=\"unknown_key\"}")
            >= 1.0,
        "{text}"
    );
    assert!(
        grew("ssh_gateway_channels_opened_total{kind=\"session\"}") >= 1.0,
        "{text}"
    );
    assert!(
        grew("ssh_gateway_channels_closed_total{end=\"exit_ok\",kind=\"session\"}") >= 1.0,
        "{text}"
    );
    assert!(
        grew("ssh_gateway_channel_bytes_total{direction=\"out\"}") >= 5000.0,
        "{text}"
    );
    assert_eq!(
        value(&after, "ssh_gateway_connections_active"),
        0.0,
        "{text}"
    );
    assert!(text.contains("ssh_gateway_connection_duration_seconds_bucket"));

    // Bounded labels: no user, sandbox, key or address ever becomes one.
    for series in after.keys() {
        if let Some((_, labels)) = series.split_once('{') {
            for forbidden in ["dev", "demo", "SHA256", "127.0.0.1", "stranger"] {
                assert!(
                    !labels.contains(&format!("\"{forbidden}")),
                    "{series} carries {forbidden:?}"
                );
            }
        }
    }
}

/// Bytes count as they move: a transfer still running shows in the metrics, so a
/// rate over a long session is not one spike at its end.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_show_while_the_channel_is_still_open() {
    use std::io::Read;
    use std::process::Stdio;

    let gw = Gateway::start();
    let (_, before) = metrics(&gw).await;
    let mut cmd = gw.ssh(&gw.dev_key);
    cmd.args(["demo@127.0.0.1", "head -c 70000 /dev/zero; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The client has all of it once it has read 70000 bytes.
    let got = tokio::task::block_in_place(|| {
        let mut buf = vec![0u8; 70_000];
        stdout.read_exact(&mut buf).map(|_| buf.len())
    });
    assert_eq!(got.unwrap(), 70_000);

    let (text, during) = metrics(&gw).await;
    let grew = |series: &str| value(&during, series) - value(&before, series);
    assert!(
        grew("ssh_gateway_channel_bytes_total{direction=\"out\"}") >= 70_000.0,
        "{text}"
    );
    assert_eq!(
        value(&during, "ssh_gateway_channels_active{kind=\"session\"}"),
        1.0,
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
