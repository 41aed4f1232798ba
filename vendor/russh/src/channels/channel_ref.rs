use std::sync::Arc;

use tokio::sync::Notify;
use tokio::sync::mpsc::Sender;

use super::{ReadProgress, WindowSizeRef};
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    /// Server channels only: what the reader has taken (ssh-gateway patch).
    pub(super) progress: Option<Arc<ReadProgress>>,
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            progress: None,
        }
    }

    /// A reference whose reader will report what it takes; the read half made for
    /// `sender`'s receiver must carry the same [`ReadProgress`].
    pub(crate) fn tracked(sender: Sender<ChannelMsg>, wake: Arc<Notify>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            progress: Some(ReadProgress::new(wake)),
        }
    }

    pub(crate) fn progress(&self) -> Option<&Arc<ReadProgress>> {
        self.progress.as_ref()
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
