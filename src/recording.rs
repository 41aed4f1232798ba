//! Session recording: a PTY session's terminal output (and, when configured, its
//! input) with timing and resizes, as an asciicast v2 file that `asciinema play`
//! replays. The bridge only offers chunks to a bounded queue and never waits: a full
//! queue (a writer behind a slow disk) drops the chunk and counts it, so recording
//! cannot slow a session. One writer task per recording owns the file.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::RecordingConfig;

/// Chunks waiting for the writer; a burst of output fits, a stuck disk does not grow.
const QUEUE: usize = 256;

enum Frame {
    Output(Bytes),
    Input(Bytes),
    Resize(u16, u16),
}

/// The bridge's end of one recording.
pub struct Recorder {
    queue: mpsc::Sender<(f64, Frame)>,
    started: Instant,
    input: bool,
}

/// The terminal a recording starts with.
pub struct Terminal<'a> {
    pub term: &'a str,
    pub cols: u16,
    pub rows: u16,
}

impl Recorder {
    /// Creates `<dir>/<id>.cast` (0600; the gateway made `dir` 0700 at start) with its
    /// header and starts its writer; returns the recorder and the file's name.
    /// The writer runs on `registry`'s tracker, so a draining gateway waits for its
    /// last writes.
    pub async fn start(
        config: &RecordingConfig,
        registry: &crate::conn::Registry,
        id: &str,
        terminal: Terminal<'_>,
    ) -> std::io::Result<(Recorder, String)> {
        let name = format!("{id}.cast");
        let path = config.dir.join(&name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        let header = serde_json::json!({
            "version": 2,
            "width": terminal.cols,
            "height": terminal.rows,
            "timestamp": crate::conn::unix_ms() / 1000,
            "env": {"TERM": terminal.term},
        });
        let (queue, rx) = mpsc::channel(QUEUE);
        registry.spawn(write(file, header.to_string(), rx, config.max_bytes, path));
        Ok((
            Recorder {
                queue,
                started: Instant::now(),
                input: config.input,
            },
            name,
        ))
    }

    fn offer(&self, frame: Frame) {
        let at = self.started.elapsed().as_secs_f64();
        if self.queue.try_send((at, frame)).is_err() {
            crate::metrics::global().recording_dropped();
        }
    }

    pub fn output(&self, chunk: &Bytes) {
        self.offer(Frame::Output(chunk.clone()));
    }

    /// What the user typed; kept only when `[recording] input` is on.
    pub fn input(&self, data: &[u8]) {
        if self.input {
            self.offer(Frame::Input(Bytes::copy_from_slice(data)));
        }
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        self.offer(Frame::Resize(cols, rows));
    }
}

/// Text for one event: valid UTF-8 (a character split across two reads is carried
/// over to the next), anything else replaced, as terminals show it.
fn text(carry: &mut Vec<u8>, chunk: &[u8]) -> String {
    carry.extend_from_slice(chunk);
    let valid = match std::str::from_utf8(carry) {
        Ok(_) => carry.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => carry.len(),
    };
    let rest = carry.split_off(valid);
    let out = String::from_utf8_lossy(carry).into_owned();
    *carry = rest;
    out
}

async fn write(
    file: tokio::fs::File,
    header: String,
    mut rx: mpsc::Receiver<(f64, Frame)>,
    max_bytes: u64,
    path: PathBuf,
) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut written = 0u64;
    let mut full = false;
    let (mut carry_out, mut carry_in) = (Vec::new(), Vec::new());
    let result: std::io::Result<()> = async {
        out.write_all(header.as_bytes()).await?;
        out.write_all(b"\n").await?;
        while let Some((at, frame)) = rx.recv().await {
            if full {
                continue;
            }
            let event = match frame {
                Frame::Output(b) => serde_json::json!([at, "o", text(&mut carry_out, &b)]),
                Frame::Input(b) => serde_json::json!([at, "i", text(&mut carry_in, &b)]),
                Frame::Resize(c, r) => serde_json::json!([at, "r", format!("{c}x{r}")]),
            };
            let line = event.to_string();
            written += line.len() as u64 + 1;
            if written > max_bytes {
                // Say where it stops, then keep the session going unrecorded.
                let marker = serde_json::json!([
                    at,
                    "o",
                    "\r\n[ssh-gateway: recording stopped: size limit reached]\r\n"
                ]);
                out.write_all(marker.to_string().as_bytes()).await?;
                out.write_all(b"\n").await?;
                full = true;
                continue;
            }
            out.write_all(line.as_bytes()).await?;
            out.write_all(b"\n").await?;
            // Written as it comes (a crash keeps what was shown), in buffered writes.
            if rx.is_empty() {
                out.flush().await?;
            }
        }
        out.flush().await
    }
    .await;
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "session recording failed; the session goes on unrecorded");
    }
}

/// Deletes recordings (`rec_*.cast` in `dir`) last written more than `retention`
/// ago, now and every hour, until `stop`. Other files there are left alone.
pub async fn prune(
    dir: PathBuf,
    retention: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match prune_once(&dir, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(recordings = n, "deleted recordings past retention"),
            Err(e) => warn!(error = %e, dir = %dir.display(), "could not prune recordings"),
        }
    }
}

async fn prune_once(dir: &std::path::Path, retention: std::time::Duration) -> std::io::Result<u64> {
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(retention) else {
        return Ok(0);
    };
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut deleted = 0;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with("rec_") && n.ends_with(".cast"));
        if !ours {
            continue;
        }
        // symlink_metadata: a link planted there is judged (and removed) as itself.
        let Ok(meta) = tokio::fs::symlink_metadata(entry.path()).await else {
            continue;
        };
        if meta.modified().is_ok_and(|m| m < cutoff)
            && tokio::fs::remove_file(entry.path()).await.is_ok()
        {
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that never catches up (a stuck disk) costs the session nothing: the
    /// bridge's offers return at once and what does not fit is dropped.
    #[test]
    fn a_writer_that_falls_behind_never_holds_the_session() {
        let (queue, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder {
            queue,
            started: Instant::now(),
            input: false,
        };
        let chunk = Bytes::from_static(b"output");
        for _ in 0..QUEUE + 100 {
            recorder.output(&chunk);
        }
        recorder.input(b"typed");
        assert_eq!(rx.len(), QUEUE);
    }

    #[test]
    fn characters_split_across_reads_are_kept_whole() {
        let mut carry = Vec::new();
        let e_acute = "é".as_bytes();
        assert_eq!(text(&mut carry, &[b'a', e_acute[0]]), "a");
        assert_eq!(text(&mut carry, &[e_acute[1], b'b']), "éb");
        assert!(carry.is_empty());
        // Bytes that are never UTF-8 are replaced, not held.
        assert_eq!(text(&mut carry, &[0xff, b'c']), "\u{fffd}c");
        assert!(carry.is_empty());
    }
}
