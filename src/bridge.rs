//! Bridge stage: copies bytes between one SSH channel and one backend process or
//! stream, with SSH flow control both ways, EOF in both directions, exit status,
//! signals and window changes, counted into the channel's `Counters`.
//!
//! Each bridge is one future with no tasks of its own: the channel task that runs it
//! ends it by dropping it (client gone, connection revoked), which drops the
//! program's stdin and control handle, and the backend then ends the program.
//!
//! Input is written to the program as it is read from the channel, with no queue in
//! between: while the program does not read, this channel is not read either, and its
//! SSH window stays closed (see vendor/russh) — it stalls only itself.
//! EOF, exit-status and close go out through the same write half after all output
//! (notes/russh-tuning.md).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use russh::server::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::backend::{Control, Duplex, Exit, Process, Signal, window_size_from_ssh};
use crate::conn::Counters;
use crate::conn::events::ChannelEnd;
use crate::recording::Recorder;

/// Read size for output: 64 KiB reads make full-size SSH packets (8 KiB ones cost 15-30 %).
const READ_CHUNK: usize = 64 * 1024;
/// After a PTY program exits, how long to wait for background jobs that still hold
/// the terminal before closing anyway.
const PTY_LINGER: Duration = Duration::from_millis(500);

/// How the client side of a channel ended its input.
enum InputEnd {
    /// EOF, then nothing more: the program runs on.
    Eof,
    /// The client closed the channel or went away: stop.
    Closed,
}

/// Runs `process` behind the channel until it exits and its output is delivered, or
/// until the client closes the channel. Returns what the client was told. A line
/// sent on `notices` (the gateway is draining) goes to the channel's stderr.
pub async fn run_process(
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    handle: Handle,
    process: Process,
    counters: &Counters,
    mut notices: watch::Receiver<Option<Arc<str>>>,
    recorder: Option<&Recorder>,
) -> ChannelEnd {
    let Process {
        stdin,
        stdout,
        stderr,
        control,
        mut exit,
        tty,
    } = process;
    let input = async {
        if let InputEnd::Eof = pump_input(&mut rx, stdin, Some(&control), counters, recorder).await
        {
            // After EOF keep taking resizes and signals until the channel closes.
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Close => break,
                    other => forward_control(other, Some(&control), recorder),
                }
            }
        }
    };
    let outputs = async {
        let out = copy_out(stdout, &tx, None, counters, recorder);
        match stderr {
            Some(err) => {
                tokio::join!(out, copy_out(err, &tx, Some(1), counters, recorder));
            }
            None => out.await,
        }
    };
    tokio::pin!(input, outputs);
    let mut outputs_done = false;
    // One already out (a channel opened during a drain) is shown at once.
    notices.mark_changed();
    let mut noticing = true;
    let status = loop {
        tokio::select! {
            changed = notices.changed(), if noticing => match changed {
                Ok(()) => {
                    let text = notices.borrow_and_update().clone();
                    if let Some(text) = text {
                        let newline = if tty { "\r\n" } else { "\n" };
                        let line = format!("{newline}ssh-gateway: {text}{newline}");
                        let _ = tx.extended_data_bytes(1, line.into_bytes()).await;
                    }
                }
                Err(_) => noticing = false,
            },
            // The client closed the channel (or left): nothing can reach it any more.
            _ = &mut input => return ChannelEnd::Closed,
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
    let end = match status {
        Exit::Code(code) => {
            let _ = tx.exit_status(code).await;
            ChannelEnd::Exit(code)
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
            ChannelEnd::Signal(name)
        }
    };
    // No need to wait for the client's close: the channel's reader goes with `rx`.
    let _ = tx.close().await;
    end
}

/// Writes channel data to `stdin` as it arrives (so a program that does not read
/// holds this channel's window closed), applies resizes and signals, and closes
/// `stdin` at the client's EOF.
async fn pump_input(
    rx: &mut ChannelReadHalf,
    mut stdin: impl AsyncWrite + Unpin,
    control: Option<&mpsc::Sender<Control>>,
    counters: &Counters,
    recorder: Option<&Recorder>,
) -> InputEnd {
    let mut open = true;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if open {
                    counters.add_in(data.len());
                    if let Some(r) = recorder {
                        r.input(&data);
                    }
                    // A program that closed its stdin just stops getting input.
                    open = stdin.write_all(&data).await.is_ok();
                }
            }
            ChannelMsg::Eof => {
                if open {
                    let _ = stdin.shutdown().await;
                }
                return InputEnd::Eof;
            }
            ChannelMsg::Close => return InputEnd::Closed,
            other => forward_control(other, control, recorder),
        }
    }
    InputEnd::Closed
}

fn forward_control(
    msg: ChannelMsg,
    control: Option<&mpsc::Sender<Control>>,
    recorder: Option<&Recorder>,
) {
    let Some(control) = control else { return };
    match msg {
        ChannelMsg::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        } => {
            let size = window_size_from_ssh(col_width, row_height, pix_width, pix_height);
            if let Some(r) = recorder {
                r.resize(size.cols, size.rows);
            }
            let _ = control.try_send(Control::Resize(size));
        }
        ChannelMsg::Signal { signal } => {
            if let Some(sig) = from_sig(&signal) {
                let _ = control.try_send(Control::Signal(sig));
            }
        }
        _ => {}
    }
}

/// Copies one output stream to the channel (`ext` = Some(1) for stderr). Sending waits
/// for this channel's window only, so a slow client stalls no other channel.
async fn copy_out(
    mut from: impl AsyncRead + Unpin,
    tx: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    counters: &Counters,
    recorder: Option<&Recorder>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                counters.add_out(n);
                let chunk = buf.split().freeze();
                if let Some(r) = recorder {
                    r.output(&chunk);
                }
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
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    stream: Box<dyn Duplex>,
    counters: &Counters,
) {
    let (read_half, write_half) = tokio::io::split(stream);
    let up = pump_input(&mut rx, write_half, None, counters, None);
    let down = copy_out(read_half, &tx, None, counters, None);
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            end = &mut up, if !up_done => match end {
                InputEnd::Closed => return,
                // Half-close: the other side may still answer.
                InputEnd::Eof => up_done = true,
            },
            _ = &mut down => break,
        }
    }
    let _ = tx.eof().await;
    // Close once the client has also finished sending (or has gone).
    if !up_done {
        up.await;
    }
    let _ = tx.close().await;
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
