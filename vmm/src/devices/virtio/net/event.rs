//! Epoll glue of the network device: the activation eventfd, the two queue
//! eventfds and the backend's fd, all on the event-manager thread.
//!
//! The backend fd is watched only while the device is active: for input
//! when no frame waits for rx buffers or for the rx rate limiter
//! (otherwise the guest's rx notification or the limiter's timer resumes
//! reading), for output when the backend holds unwritten data. The rate
//! limiters' timers (tx, rx) are registered at `init` if limited.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::Net;
use crate::devices::virtio::activation::CTL_DATA;
use crate::rate_limiter::{SECOND_TIMER_DATA as RX_TIMER_DATA, TIMER_DATA as TX_TIMER_DATA};

/// `Events::data` of the backend fd.
const BACKEND_DATA: u32 = 100;

impl Net {
    /// The readiness the backend fd should be watched for now (`None`:
    /// not at all).
    fn wanted_interest(&self) -> Option<EventSet> {
        if !self.common.is_activated() || self.backend_dead {
            return None;
        }
        let mut set = EventSet::empty();
        if !self.rx_pending && !self.rx_limiter.is_blocked() {
            set |= EventSet::IN;
        }
        if self.tx_pending || self.backend.wants_write() {
            set |= EventSet::OUT;
        }
        // Without IN or OUT, epoll still reports hang-ups: keep the fd out
        // of epoll instead, so a closed backend cannot spin the loop.
        (!set.is_empty()).then_some(set)
    }

    fn update_interest(&mut self, ops: &mut EventOps) {
        let wanted = self.wanted_interest();
        if wanted == self.watched {
            return;
        }
        let fd = self.backend.fd();
        let result = match (self.watched, wanted) {
            (None, Some(set)) => ops.add(Events::with_data_raw(fd, BACKEND_DATA, set)),
            (Some(_), Some(set)) => ops.modify(Events::with_data_raw(fd, BACKEND_DATA, set)),
            (Some(_), None) => ops.remove(Events::empty_raw(fd)),
            (None, None) => Ok(()),
        };
        match result {
            Ok(()) => self.watched = wanted,
            Err(e) => log::error!("virtio-net: cannot watch the backend: {e:?}"),
        }
    }

    fn handle_backend(&mut self, set: EventSet) {
        if set.contains(EventSet::OUT) {
            if let Err(e) = self.backend.flush() {
                self.mark_backend_dead(&e);
            }
        }
        let hangup =
            set.intersects(EventSet::HANG_UP | EventSet::ERROR) && !set.contains(EventSet::IN);
        if hangup {
            self.mark_backend_dead(&std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        self.common.init_events(ops);
        self.tx_limiter.register(ops, TX_TIMER_DATA);
        self.rx_limiter.register(ops, RX_TIMER_DATA);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.common.sync_events(ops);
        match events.data() {
            CTL_DATA => {}
            BACKEND_DATA => self.handle_backend(events.event_set()),
            // A limiter's wait is over: the queues are run below.
            TX_TIMER_DATA => self.tx_limiter.timer_fired(),
            RX_TIMER_DATA => self.rx_limiter.timer_fired(),
            // A queue kick: the queues are run below.
            q if self.common.queue_event(q).is_some() => {}
            other => log::debug!("virtio-net: unexpected event data {other}"),
        }
        self.run_queues();
        self.update_interest(ops);
    }
}
