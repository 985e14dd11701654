//! The loop every device runs over a queue: suppress notifications, pop
//! and handle every available chain, enable notifications again, and go
//! on if the driver made chains available in between (it did not notify,
//! since notifications were off).
//!
//! The loop is written against [`ChainSource`] so that it can be tested
//! with a scripted queue; devices use it through
//! [`Activated::drain`](super::common::Activated::drain).

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::GuestMemory;

/// What the handler did with one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainDone {
    /// Used, with this many bytes written into it; go on with the next
    /// chain.
    Used(u32),
    /// Used (bytes written as in `Used`); stop here, notifications stay
    /// suppressed: the device comes back on its own (e.g. when a full
    /// backend becomes writable).
    UsedThenStop(u32),
    /// Not consumed: the chain goes back to the queue and the loop stops
    /// with notifications suppressed (the device has nothing to put in it;
    /// it comes back when it has).
    Unused,
}

/// The queue operations the loop needs.
pub trait ChainSource {
    /// One descriptor chain.
    type Chain;
    /// The head index of `chain` (what the used ring reports).
    fn head(chain: &Self::Chain) -> u16;
    /// Asks the driver not to notify; false if the ring is unusable.
    fn disable_notification(&mut self) -> bool;
    /// Asks the driver to notify again; true if chains are available
    /// (errors count as none).
    fn enable_notification(&mut self) -> bool;
    /// The next available chain.
    fn pop(&mut self) -> Option<Self::Chain>;
    /// Puts the last popped chain back.
    fn unpop(&mut self);
    /// Returns chain `head` to the driver with `len` bytes written.
    fn add_used(&mut self, head: u16, len: u32);
}

/// How many passes in a row may find nothing while the ring claims more:
/// one re-check after enabling notifications, then the ring is garbage.
const MAX_EMPTY_PASSES: usize = 2;

/// Runs the loop; true if any chain was used.
pub fn drain<Q: ChainSource>(queue: &mut Q, mut handle: impl FnMut(Q::Chain) -> ChainDone) -> bool {
    let mut used = false;
    let mut empty_passes = 0usize;
    loop {
        if !queue.disable_notification() {
            return used;
        }
        let mut popped = 0usize;
        while let Some(chain) = queue.pop() {
            let head = Q::head(&chain);
            match handle(chain) {
                ChainDone::Used(len) => queue.add_used(head, len),
                ChainDone::UsedThenStop(len) => {
                    queue.add_used(head, len);
                    return true;
                }
                ChainDone::Unused => {
                    queue.unpop();
                    return used;
                }
            }
            used = true;
            popped += 1;
        }
        // A bogus avail index makes the ring claim chains that pop never
        // yields: give up after passes that found nothing.
        empty_passes = if popped == 0 { empty_passes + 1 } else { 0 };
        if !queue.enable_notification() || empty_passes >= MAX_EMPTY_PASSES {
            return used;
        }
    }
}

/// A device-side queue over guest memory.
pub struct GuestQueue<'a> {
    mem: &'a GuestMemory,
    queue: &'a mut Queue,
}

impl<'a> GuestQueue<'a> {
    /// `queue` over `mem`.
    pub fn new(mem: &'a GuestMemory, queue: &'a mut Queue) -> Self {
        Self { mem, queue }
    }
}

impl<'a> ChainSource for GuestQueue<'a> {
    type Chain = DescriptorChain<&'a GuestMemory>;

    fn head(chain: &Self::Chain) -> u16 {
        chain.head_index()
    }

    fn disable_notification(&mut self) -> bool {
        self.queue.disable_notification(self.mem).is_ok()
    }

    fn enable_notification(&mut self) -> bool {
        self.queue.enable_notification(self.mem).unwrap_or(false)
    }

    fn pop(&mut self) -> Option<Self::Chain> {
        self.queue.pop_descriptor_chain(self.mem)
    }

    fn unpop(&mut self) {
        self.queue.go_to_previous_position();
    }

    fn add_used(&mut self, head: u16, len: u32) {
        if let Err(e) = self.queue.add_used(self.mem, head, len) {
            log::debug!("virtio: add_used: {e}");
        }
    }
}
