//! The table of open file and directory handles.
//!
//! A handle on the wire is 8 bytes: a slot index and that slot's generation, so a
//! handle the client already closed can never reach a file opened later in the same
//! slot (OpenSSH reuses bare indices). The table is capped: a client cannot make the
//! helper hold more descriptors than [`Handles::cap`].

use std::fs::File;

use crate::sys::Dir;

/// The most handles open at once, whatever RLIMIT_NOFILE allows.
pub const MAX_HANDLES: usize = 1024;

pub enum Kind {
    File { file: File, append: bool },
    Dir(Dir),
}

pub struct Entry {
    /// The path it was opened as (READDIR needs it; copy-data compares it).
    pub name: Vec<u8>,
    pub kind: Kind,
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

pub struct Handles {
    slots: Vec<Slot>,
    free: Vec<usize>,
    open: usize,
    cap: usize,
}

impl Handles {
    pub fn new(cap: usize) -> Handles {
        Handles {
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            cap,
        }
    }

    /// The cap, as advertised in limits@openssh.com.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Stores an entry and returns its wire handle, or gives the entry back when the
    /// table is full.
    pub fn insert(&mut self, entry: Entry) -> Result<[u8; 8], Entry> {
        if self.open >= self.cap {
            return Err(entry);
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.entry = Some(entry);
        self.open += 1;
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&(index as u32).to_be_bytes());
        h[4..].copy_from_slice(&slot.generation.to_be_bytes());
        Ok(h)
    }

    fn index(&self, handle: &[u8]) -> Option<usize> {
        let h: &[u8; 8] = handle.try_into().ok()?;
        let index = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let generation = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let slot = self.slots.get(index)?;
        (slot.generation == generation && slot.entry.is_some()).then_some(index)
    }

    pub fn get(&self, handle: &[u8]) -> Option<&Entry> {
        let i = self.index(handle)?;
        self.slots[i].entry.as_ref()
    }

    pub fn get_mut(&mut self, handle: &[u8]) -> Option<&mut Entry> {
        let i = self.index(handle)?;
        self.slots[i].entry.as_mut()
    }

    /// The open file behind a handle (None for unknown or directory handles).
    pub fn file(&self, handle: &[u8]) -> Option<(&File, bool)> {
        match &self.get(handle)?.kind {
            Kind::File { file, append } => Some((file, *append)),
            Kind::Dir(_) => None,
        }
    }

    pub fn remove(&mut self, handle: &[u8]) -> Option<Entry> {
        let i = self.index(handle)?;
        let entry = self.slots[i].entry.take();
        self.free.push(i);
        self.open -= 1;
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            name: b"/dev/null".to_vec(),
            kind: Kind::File {
                file: File::open("/dev/null").unwrap(),
                append: false,
            },
        }
    }

    #[test]
    fn stale_and_foreign_handles_are_unknown_and_the_cap_holds() {
        let mut t = Handles::new(2);
        let a = t.insert(entry()).ok().unwrap();
        let b = t.insert(entry()).ok().unwrap();
        assert!(t.insert(entry()).is_err());
        assert!(t.remove(&a).is_some());
        assert!(t.get(&a).is_none());
        let c = t.insert(entry()).ok().unwrap();
        assert_ne!(a, c, "a reused slot gets a new generation");
        assert!(t.get(&a).is_none());
        assert!(t.file(&b).is_some());
        assert!(t.get(&[0, 0, 0, 0]).is_none());
        assert!(t.get(&[0xff; 8]).is_none());
    }
}
