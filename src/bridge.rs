//! Bridge stage: copies bytes between one SSH channel and one backend process or
//! stream, with SSH flow control on the way out, EOF in both directions, exit status,
//! signals and window changes, and a byte count for the log.
//!
//! Two rules from measuring russh (see notes/russh-tuning.md): the channel's read half
//! is drained until the client closes (with the vendored russh patch a reader that
//! falls behind closes only its own channel's window, but a read half left unread
//! holds that window shut), and EOF, exit-status and close go out through the same
//! write half after all output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::server::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::{Control, Duplex, Exit, Process, Signal, window_size_from_ssh};

/// Read size for output: 64 KiB reads make full-size SSH packets (8 KiB ones cost 15-30 %).
const READ_CHUNK: usize = 64 * 1024;
/// Packets queued between the channel reader and a slow stdin, per channel. With
/// 64 KiB packets this bounds a channel's parked input at 4 MiB.
const INPUT_QUEUE: usize = 64;
/// After a PTY program exits, how long to wait for background jobs that still hold
/// the terminal before closing anyway.
const PTY_LINGER: Duration = Duration::from_millis(500);

/// Bytes moved on one channel, both ways.
#[derive(Debug, Default)]
pub struct Counters {
    pub to_workload: AtomicU64,
    pub from_workload: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.to_workload.load(Ordering::Relaxed),
            self.from_workload.load(Ordering::Relaxed),
        )
    }
}

/// Runs `process` behind the channel until it exits and its output is delivered.
pub async fn run_process(
    rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    handle: Handle,
    process: Process,
    counters: Arc<Counters>,
) {
    let Process {
        stdin,
        stdout,
        stderr,
        control,
        mut exit,
        tty,
    } = process;
    let (input_tx, input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    tokio::spawn(write_input(stdin, input_rx, counters.clone()));
    // The reader keeps `control`: when it ends (client closed), the process is ended.
    let reader = tokio::spawn(read_channel(rx, input_tx, Some(control)));

    let outputs = async {
        let out = copy_out(stdout, &tx, None, &counters);
        match stderr {
            Some(err) => {
                tokio::join!(out, copy_out(err, &tx, Some(1), &counters));
            }
            None => out.await,
        }
    };
    tokio::pin!(outputs);
    let mut outputs_done = false;
    let status = loop {
        tokio::select! {
            _ = &mut outputs, if !outputs_done => outputs_done = true,
            status = &mut exit => {
                let status = status.unwrap_or(Exit::Code(255));
                if !outputs_done {
                    if tty {
                        let _ = tokio::time::timeout(PTY_LINGER, &mut outputs).await;
                    } else {
                        outputs.as_mut().await;
                    }
                }
                break status;
            }
        }
    };
    let _ = tx.eof().await;
    match status {
        Exit::Code(code) => {
            let _ = tx.exit_status(code).await;
        }
        Exit::Signal { name, core_dumped } => {
            let _ = handle
                .exit_signal_request(
                    tx.id(),
                    to_sig(&name),
                    core_dumped,
                    String::new(),
                    String::new(),
                )
                .await;
        }
    }
    let _ = tx.close().await;
    // Keep draining until the client's close arrives, so the connection never stalls.
    let _ = reader.await;
}

/// Drains the channel: data to the input queue, EOF closes it, window changes and
/// signals to `control`. Once the program stops reading, further input is dropped
/// rather than left to block the connection.
async fn read_channel(
    mut rx: ChannelReadHalf,
    input: mpsc::Sender<Bytes>,
    control: Option<mpsc::Sender<Control>>,
) {
    let mut input = Some(input);
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(q) = &input
                    && q.send(data).await.is_err()
                {
                    input = None;
                }
            }
            ChannelMsg::Eof => input = None,
            ChannelMsg::Close => break,
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Some(c) = &control {
                    let size = window_size_from_ssh(col_width, row_height, pix_width, pix_height);
                    let _ = c.try_send(Control::Resize(size));
                }
            }
            ChannelMsg::Signal { signal } => {
                if let (Some(c), Some(sig)) = (&control, from_sig(&signal)) {
                    let _ = c.try_send(Control::Signal(sig));
                }
            }
            _ => {}
        }
    }
}

async fn write_input(
    mut stdin: impl AsyncWrite + Unpin,
    mut input: mpsc::Receiver<Bytes>,
    counters: Arc<Counters>,
) {
    while let Some(chunk) = input.recv().await {
        counters
            .to_workload
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if stdin.write_all(&chunk).await.is_err() {
            return; // the program closed its stdin; the reader will notice the queue is gone
        }
    }
    let _ = stdin.shutdown().await;
}

/// Copies one output stream to the channel (`ext` = Some(1) for stderr). Sending waits
/// for this channel's window only, so a slow client stalls no other channel.
async fn copy_out(
    mut from: impl AsyncRead + Unpin,
    tx: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    counters: &Counters,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                counters
                    .from_workload
                    .fetch_add(n as u64, Ordering::Relaxed);
                let chunk = buf.split().freeze();
                let sent = match ext {
                    None => tx.data_bytes(chunk).await,
                    Some(code) => tx.extended_data_bytes(code, chunk).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    }
}

/// Bridges a forwarded connection (direct-tcpip) with half-close in both directions.
pub async fn run_stream(
    rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    stream: Box<dyn Duplex>,
    counters: Arc<Counters>,
) {
    let (read_half, write_half) = tokio::io::split(stream);
    let (input_tx, input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    let writer = tokio::spawn(write_input(write_half, input_rx, counters.clone()));
    let reader = tokio::spawn(read_channel(rx, input_tx, None));
    copy_out(read_half, &tx, None, &counters).await;
    let _ = tx.eof().await;
    // Close once the client has also finished sending (or has gone).
    let _ = writer.await;
    let _ = tx.close().await;
    let _ = reader.await;
}

fn from_sig(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::HUP => Signal::Hup,
        Sig::INT => Signal::Int,
        Sig::QUIT => Signal::Quit,
        Sig::KILL => Signal::Kill,
        Sig::TERM => Signal::Term,
        Sig::USR1 => Signal::Usr1,
        Sig::Custom(name) if name == "USR2" => Signal::Usr2,
        _ => return None,
    })
}

fn to_sig(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_owned()),
    }
}
