// ssh-gateway patch: receive-side flow control for server channels (see PATCHES.md).
//
// Upstream re-opens a channel's window as data *arrives* and hands each message to the
// channel's bounded queue with `send().await`, so one reader that stops reading parks
// the whole session loop. Here the loop never waits on a channel: a message the
// queue has no room for is parked in that channel's backlog (and everything after it
// for that channel follows it there, keeping the order), the window is debited on
// receipt and re-opened only as the reader takes data, and readers wake the loop
// through `Handle::read_wake` when it is waiting for them.
//
// Memory per channel: the peer can only send what the window allows, and the window
// is re-opened to at most `target - unconsumed`, so queued plus parked data never
// exceeds the target window. Small packets are merged while parked so the number of
// entries stays proportional to bytes, and requests (which the window does not cover)
// have a budget of their own.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use log::{debug, warn};
use ssh_encoding::Encode;
use tokio::sync::mpsc::error::TrySendError;

use super::{Handler, Session};
use crate::channels::{ChannelMsg, ChannelRef};
use crate::{ChannelId, Disconnect, Error, msg};

/// Parked data messages smaller than this together are merged into one entry, so a
/// peer sending one-byte packets cannot make us hold one entry per byte of window.
const MERGE_BELOW: usize = 16 * 1024;
/// What the requests parked on one channel may cost (an estimate of their memory)
/// before the peer is disconnected. Requests are not covered by the window.
const PARKED_REQUEST_BUDGET: usize = 1024 * 1024;
/// The cost charged for a parked request on top of its variable-length fields.
const PARKED_REQUEST_OVERHEAD: usize = 128;

/// A channel as the server session loop holds it: the reader's queue and what did not
/// fit in it yet.
#[derive(Debug)]
pub(crate) struct ServerChannel {
    chan: ChannelRef,
    backlog: VecDeque<Parked>,
    parked_request_cost: usize,
    /// Data bytes accepted for the reader (queued or parked) since the channel opened.
    received: u64,
    /// The reader is gone or has closed its queue: whatever arrives is dropped.
    discarding: bool,
    /// The peer's CLOSE is parked behind the backlog: forget the channel once the
    /// backlog is delivered (or dropped).
    closing: bool,
    /// The loop asked the reader to wake it (backlog to move, window to re-open).
    waiting: bool,
}

#[derive(Debug)]
enum Parked {
    Msg(ChannelMsg),
    Merged { ext: Option<u32>, data: BytesMut },
}

impl Parked {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Parked::Msg(msg) => msg,
            Parked::Merged { ext: None, data } => ChannelMsg::Data {
                data: data.freeze(),
            },
            Parked::Merged {
                ext: Some(ext),
                data,
            } => ChannelMsg::ExtendedData {
                data: data.freeze(),
                ext,
            },
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Parked::Merged { data, .. } => data.len(),
            Parked::Msg(msg) => data_len(msg).unwrap_or(0),
        }
    }

    /// This entry's data, if it is data of stream `ext`.
    fn data_of(&self, ext: Option<u32>) -> Option<&[u8]> {
        match (self, ext) {
            (Parked::Merged { ext: e, data }, _) if *e == ext => Some(data),
            (Parked::Msg(ChannelMsg::Data { data }), None) => Some(data),
            (Parked::Msg(ChannelMsg::ExtendedData { data, ext: e }), Some(x)) if *e == x => {
                Some(data)
            }
            _ => None,
        }
    }
}

fn msg_data(msg: &ChannelMsg) -> Option<&Bytes> {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => Some(data),
        _ => None,
    }
}

fn data_len(msg: &ChannelMsg) -> Option<usize> {
    msg_data(msg).map(Bytes::len)
}

fn data_ext(msg: &ChannelMsg) -> Option<u32> {
    match msg {
        ChannelMsg::ExtendedData { ext, .. } => Some(*ext),
        _ => None,
    }
}

/// Roughly what a parked request holds on the heap.
fn request_cost(msg: &ChannelMsg) -> usize {
    PARKED_REQUEST_OVERHEAD
        + match msg {
            ChannelMsg::RequestPty {
                term,
                terminal_modes,
                ..
            } => term.len() + terminal_modes.len() * 8,
            ChannelMsg::Exec { command, .. } => command.len(),
            ChannelMsg::RequestSubsystem { name, .. } => name.len(),
            ChannelMsg::RequestX11 {
                x11_authentication_protocol,
                x11_authentication_cookie,
                ..
            } => x11_authentication_protocol.len() + x11_authentication_cookie.len(),
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => variable_name.len() + variable_value.len(),
            _ => 0,
        }
}

/// The peer queued more requests for a reader that is not reading than we hold.
#[derive(Debug)]
pub(crate) struct RequestBudgetExceeded;

impl ServerChannel {
    pub(crate) fn new(chan: ChannelRef) -> Self {
        Self {
            chan,
            backlog: VecDeque::new(),
            parked_request_cost: 0,
            received: 0,
            discarding: false,
            closing: false,
            waiting: false,
        }
    }

    pub(crate) fn chan(&self) -> &ChannelRef {
        &self.chan
    }

    pub(crate) fn is_backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Hands `msg` to the reader, behind anything already parked for it.
    pub(crate) fn deliver(&mut self, msg: ChannelMsg) -> Result<(), RequestBudgetExceeded> {
        if self.discarding || self.reader_gone() {
            self.discard();
            return Ok(());
        }
        let len = data_len(&msg).unwrap_or(0) as u64;
        let msg = if self.backlog.is_empty() {
            match self.chan.try_send(msg) {
                Ok(()) => {
                    self.received += len;
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => {
                    self.discard();
                    return Ok(());
                }
                Err(TrySendError::Full(msg)) => msg,
            }
        } else {
            msg
        };
        self.received += len;
        self.park(msg)?;
        // The reader may have made room since the failed send: look again, with the
        // wake-up armed first so a take after this look is not missed.
        self.pump();
        Ok(())
    }

    fn park(&mut self, msg: ChannelMsg) -> Result<(), RequestBudgetExceeded> {
        let Some(data) = msg_data(&msg) else {
            self.parked_request_cost += request_cost(&msg);
            self.backlog.push_back(Parked::Msg(msg));
            if self.parked_request_cost > PARKED_REQUEST_BUDGET {
                return Err(RequestBudgetExceeded);
            }
            return Ok(());
        };
        let ext = data_ext(&msg);
        let merge = self
            .backlog
            .back()
            .and_then(|last| last.data_of(ext))
            .is_some_and(|last| last.len() + data.len() < MERGE_BELOW);
        match self.backlog.back_mut() {
            Some(Parked::Merged { data: merged, .. }) if merge => merged.extend_from_slice(data),
            Some(last @ Parked::Msg(_)) if merge => {
                let mut merged = BytesMut::with_capacity(MERGE_BELOW);
                merged.extend_from_slice(last.data_of(ext).unwrap_or_default());
                merged.extend_from_slice(data);
                *last = Parked::Merged { ext, data: merged };
            }
            _ => self.backlog.push_back(Parked::Msg(msg)),
        }
        Ok(())
    }

    /// Moves parked messages into the reader's queue while it has room. Leaves the
    /// reader's wake-up armed if anything is still parked.
    pub(crate) fn pump(&mut self) {
        if self.reader_gone() {
            return self.discard();
        }
        if self.backlog.is_empty() {
            return;
        }
        // Any take makes room.
        let _ = self.wake_when_taken(0);
        while let Some(parked) = self.backlog.pop_front() {
            let msg = parked.into_msg();
            let cost = match data_len(&msg) {
                Some(_) => 0,
                None => request_cost(&msg),
            };
            match self.chan.try_send(msg) {
                Ok(()) => self.parked_request_cost -= cost,
                Err(TrySendError::Full(msg)) => {
                    self.backlog.push_front(Parked::Msg(msg));
                    return;
                }
                Err(TrySendError::Closed(_)) => return self.discard(),
            }
        }
    }

    /// The reader will never take what is parked or queued: drop it all.
    fn discard(&mut self) {
        if !self.backlog.is_empty() {
            debug!("dropping the backlog of a channel nobody reads");
        }
        self.backlog = VecDeque::new();
        self.parked_request_cost = 0;
        self.discarding = true;
        self.no_wake();
    }

    fn reader_gone(&self) -> bool {
        self.chan.progress().is_some_and(|p| p.reader_gone())
    }

    /// Data accepted for the reader that it has not taken yet, and how much it had
    /// taken when we looked.
    fn unconsumed(&self) -> (u64, u64) {
        if self.discarding {
            return (0, 0);
        }
        match self.chan.progress() {
            Some(progress) => {
                let taken = progress.taken();
                (self.received.saturating_sub(taken), taken)
            }
            // Without a progress report, queued counts as taken.
            None => (self.backlog.iter().map(|p| p.data_len() as u64).sum(), 0),
        }
    }

    /// Asks the reader to wake the loop once it has taken `at` bytes in all; true if
    /// it already has (looked at after arming, so nothing falls in between).
    fn wake_when_taken(&mut self, at: u64) -> bool {
        self.waiting = true;
        match self.chan.progress() {
            Some(progress) => {
                progress.wake_when_taken(at);
                progress.taken() >= at
            }
            None => false,
        }
    }

    fn no_wake(&mut self) {
        if self.waiting
            && let Some(progress) = self.chan.progress()
        {
            progress.wake_when_taken(u64::MAX);
        }
        self.waiting = false;
    }

    /// The loop has something to do for this channel after a wake-up.
    fn needs_service(&self) -> bool {
        self.waiting || (self.reader_gone() && !self.discarding)
    }

    pub(crate) fn mark_closing(&mut self) {
        self.closing = true;
    }

    fn finished(&self) -> bool {
        self.closing && self.backlog.is_empty()
    }

    /// Passes the peer's window adjustment on to the reader, informational only:
    /// dropped rather than parked or waited for.
    pub(crate) fn window_adjusted(&self, new_size: u32) {
        if self.backlog.is_empty() && !self.discarding {
            let _ = self.chan.try_send(ChannelMsg::WindowAdjusted { new_size });
        }
    }
}

impl Session {
    /// Hands a message from the peer to channel `id`'s reader without waiting.
    pub(crate) fn deliver(&mut self, id: ChannelId, msg: ChannelMsg) -> Result<(), Error> {
        let Some(channel) = self.channels.get_mut(&id) else {
            return Ok(());
        };
        if channel.deliver(msg).is_err() {
            warn!("channel {id:?}: too many requests queued for a reader that is not reading");
            self.common.disconnect(
                Disconnect::ByApplication,
                "too many channel requests queued",
                "",
            )?;
        }
        Ok(())
    }

    /// Debits channel `id`'s receive window by `len` bytes just received. A peer that
    /// sends more than it was granted is disconnected: buffering it would be unbounded.
    /// Returns false if the session is ending because of that.
    pub(crate) fn debit_window(&mut self, id: ChannelId, len: usize) -> Result<bool, Error> {
        let Some(params) = self
            .common
            .encrypted
            .as_mut()
            .and_then(|enc| enc.channels.get_mut(&id))
        else {
            return Ok(true);
        };
        match u32::try_from(len) {
            Ok(len) if len <= params.sender_window_size => {
                params.sender_window_size -= len;
                Ok(true)
            }
            _ => {
                warn!(
                    "channel {id:?}: peer sent {len} bytes with {} left in the window",
                    params.sender_window_size
                );
                self.common.disconnect(
                    Disconnect::ProtocolError,
                    "channel data exceeds the window",
                    "",
                )?;
                Ok(false)
            }
        }
    }

    /// Moves channel `id`'s backlog on and re-opens its window as far as its reader
    /// has caught up: to `target - unconsumed`, once that adds at least half the
    /// target, and never while anything is parked. Otherwise leaves the reader's
    /// wake-up armed for when that changes.
    pub(crate) fn service_channel<H: Handler>(
        &mut self,
        id: ChannelId,
        handler: &mut H,
    ) -> Result<(), Error> {
        loop {
            let Some(channel) = self.channels.get_mut(&id) else {
                return Ok(());
            };
            // Arms the wake-up itself while anything stays parked.
            channel.pump();
            if channel.finished() {
                self.channels.remove(&id);
                return Ok(());
            }
            if channel.is_backlogged() {
                return Ok(());
            }
            let Some(enc) = self.common.encrypted.as_mut() else {
                return Ok(());
            };
            let Some(params) = enc.channels.get_mut(&id) else {
                // We have closed it: nothing more will be sent on it.
                channel.no_wake();
                return Ok(());
            };
            let (unconsumed, taken) = channel.unconsumed();
            let target = u64::from(self.target_window_size);
            let open = u64::from(params.sender_window_size);
            let grant = target.saturating_sub(open + unconsumed);
            if grant > 0 && grant >= target / 2 {
                channel.no_wake();
                #[allow(clippy::cast_possible_truncation)] // grant <= target, a u32
                let grant = grant as u32;
                push_packet!(enc.write, {
                    enc.write.push(msg::CHANNEL_WINDOW_ADJUST);
                    params.recipient_channel.encode(&mut enc.write)?;
                    grant.encode(&mut enc.write)?;
                });
                params.sender_window_size += grant;
                let next = handler.adjust_window(id, self.target_window_size);
                if next > 0 {
                    self.target_window_size = next;
                }
                return Ok(());
            }
            if open >= target / 2 {
                // Plenty of window left: the next data re-checks.
                channel.no_wake();
                return Ok(());
            }
            // The window is low and the reader is behind: hear when it has caught up
            // enough for a grant of half the target. Look again if it got there
            // while we were arming.
            if !channel.wake_when_taken(taken + (open + unconsumed - target / 2)) {
                return Ok(());
            }
        }
    }

    /// After a reader's wake-up: services every channel waiting for its reader.
    pub(crate) fn service_waiting_channels<H: Handler>(
        &mut self,
        handler: &mut H,
    ) -> Result<(), Error> {
        let ids: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, c)| c.needs_service())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.service_channel(id, handler)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::Notify;

    use super::*;
    use crate::channels::ChannelReadHalf;

    fn channel(capacity: usize) -> (ServerChannel, ChannelReadHalf, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
        let chan = ChannelRef::tracked(sender, wake.clone());
        let progress = chan.progress().cloned();
        (
            ServerChannel::new(chan),
            ChannelReadHalf { receiver, progress },
            wake,
        )
    }

    fn data(bytes: &'static [u8]) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::from_static(bytes),
        }
    }

    fn describe(msg: Option<ChannelMsg>) -> String {
        match msg {
            Some(ChannelMsg::Data { data }) => String::from_utf8_lossy(&data).into_owned(),
            Some(ChannelMsg::Eof) => "EOF".into(),
            Some(ChannelMsg::Close) => "CLOSE".into(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_parks_without_waiting_and_keeps_the_order() {
        let (mut ch, mut reader, _) = channel(2);
        for msg in [
            data(b"1"),
            data(b"2"),
            data(&[b'3'; MERGE_BELOW]),
            ChannelMsg::Eof,
            data(b"4"),
            ChannelMsg::Close,
        ] {
            ch.deliver(msg).unwrap();
        }
        assert_eq!(ch.backlog.len(), 4);
        assert_eq!(ch.unconsumed().0, 3 + MERGE_BELOW as u64);
        let mut seen = Vec::new();
        while ch.is_backlogged() || !seen.contains(&"CLOSE".to_string()) {
            seen.push(describe(reader.wait().await));
            ch.pump();
        }
        seen[2].truncate(1);
        assert_eq!(seen, ["1", "2", "3", "EOF", "4", "CLOSE"]);
        assert_eq!(ch.unconsumed().0, 0);
    }

    #[tokio::test]
    async fn small_parked_data_is_merged() {
        let (mut ch, mut reader, _) = channel(1);
        ch.deliver(data(b"first")).unwrap();
        for _ in 0..1000 {
            ch.deliver(data(b"x")).unwrap();
        }
        assert_eq!(ch.backlog.len(), 1, "one merged entry");
        assert_eq!(describe(reader.wait().await), "first");
        ch.pump();
        assert_eq!(describe(reader.wait().await), "x".repeat(1000));
        assert_eq!(ch.unconsumed().0, 0);
    }

    #[tokio::test]
    async fn parked_requests_have_a_budget() {
        let (mut ch, _reader, _) = channel(1);
        let env = || ChannelMsg::SetEnv {
            want_reply: false,
            variable_name: "V".into(),
            variable_value: "v".repeat(64 * 1024),
        };
        ch.deliver(env()).unwrap();
        let accepted = (0..64).take_while(|_| ch.deliver(env()).is_ok()).count();
        assert!(
            (10..20).contains(&accepted),
            "{accepted} parked before the budget"
        );
    }

    #[tokio::test]
    async fn a_dropped_reader_drops_the_backlog_and_what_follows() {
        let (mut ch, reader, wake) = channel(1);
        ch.deliver(data(b"queued")).unwrap();
        ch.deliver(data(&[0; MERGE_BELOW])).unwrap();
        assert!(ch.is_backlogged());
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("dropping the reader wakes the loop");
        assert!(ch.needs_service());
        ch.pump();
        assert!(!ch.is_backlogged());
        ch.deliver(data(b"later")).unwrap();
        assert!(!ch.is_backlogged());
        assert_eq!(ch.unconsumed().0, 0);
        assert!(!ch.needs_service());
    }

    #[tokio::test]
    async fn the_reader_wakes_the_loop_once_it_has_taken_enough() {
        let (mut ch, mut reader, wake) = channel(8);
        for _ in 0..4 {
            ch.deliver(data(b"0123456789")).unwrap();
        }
        assert!(!ch.wake_when_taken(25));
        reader.wait().await;
        reader.wait().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_err(),
            "woken after 20 of 25 bytes"
        );
        reader.wait().await;
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("woken after 30 bytes");
        ch.no_wake();
        reader.wait().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_err(),
            "woken although nothing waits"
        );
    }
}
