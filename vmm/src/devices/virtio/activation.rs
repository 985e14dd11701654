//! Hand-over of queue eventfds from the vCPU thread (activation, reset) to
//! the event-manager thread (epoll registration).
//!
//! A device is activated and reset under its mutex on a vCPU thread, where no
//! `EventOps` is at hand. [`QueueEvents`] keeps the eventfds of the current
//! activation plus those of earlier ones that are still registered, and wakes
//! the event thread through a control eventfd; the event thread then calls
//! [`QueueEvents::sync`] to bring epoll up to date. An eventfd is always
//! removed from epoll before it is closed, so epoll never reports a stale fd.

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// `Events::data` of the control eventfd. Queue eventfds carry their queue
/// index; devices may use other small values for their own fds.
pub const CTL_DATA: u32 = u32::MAX;

/// Queue eventfds of one device and their epoll registration state.
#[derive(Debug)]
pub struct QueueEvents {
    ctl: EventFd,
    current: Vec<EventFd>,
    registered: bool,
    retired: Vec<EventFd>,
}

impl QueueEvents {
    /// A set with no queue eventfds.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            ctl: EventFd::new(EFD_NONBLOCK)?,
            current: Vec::new(),
            registered: false,
            retired: Vec::new(),
        })
    }

    /// Registers the control eventfd (from `MutEventSubscriber::init`).
    pub fn init(&self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.ctl, CTL_DATA, EventSet::IN)) {
            log::error!("virtio: cannot register the activation eventfd: {e:?}");
        }
    }

    /// Installs the queue eventfds of a new activation (vCPU thread).
    pub fn install(&mut self, evts: Vec<EventFd>) -> std::io::Result<()> {
        self.retired.append(&mut self.current);
        self.current = evts;
        self.registered = false;
        self.ctl.write(1)
    }

    /// Stops using the current queue eventfds (vCPU thread, device reset).
    pub fn retire(&mut self) {
        self.retired.append(&mut self.current);
        self.registered = false;
        if let Err(e) = self.ctl.write(1) {
            log::error!("virtio: cannot signal a reset to the event thread: {e}");
        }
    }

    /// Event thread: unregisters retired eventfds, registers current ones.
    pub fn sync(&mut self, ops: &mut EventOps) {
        // The control eventfd is non-blocking; an empty counter is fine.
        let _ = self.ctl.read();
        for evt in self.retired.drain(..) {
            // Fails harmlessly when the eventfd was retired before it was
            // ever registered.
            if let Err(e) = ops.remove(Events::empty(&evt)) {
                log::debug!("virtio: removing a retired queue eventfd: {e:?}");
            }
        }
        if !self.registered {
            for (i, evt) in self.current.iter().enumerate() {
                let events = Events::with_data(evt, i as u32, EventSet::IN);
                if let Err(e) = ops.add(events) {
                    log::error!("virtio: cannot register queue {i} eventfd: {e:?}");
                }
            }
            self.registered = true;
        }
    }

    /// Clears the notification counter of queue `index`; false if there is
    /// no such queue.
    pub fn consume(&self, index: u32) -> bool {
        match self.current.get(index as usize) {
            Some(evt) => {
                let _ = evt.read();
                true
            }
            None => false,
        }
    }
}
