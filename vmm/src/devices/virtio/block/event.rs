//! Epoll glue of the block device: the activation eventfd, the queue
//! eventfd and the rate limiter's timer (if limited), all on the
//! event-manager thread.

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::Block;
use crate::rate_limiter::TIMER_DATA;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        self.common.init_events(ops);
        self.limiter.register(ops, TIMER_DATA);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.common.sync_events(ops);
        if events.data() == TIMER_DATA {
            self.handle_rate_limit_timer();
        } else if self.common.queue_event(events.data()).is_some() {
            self.handle_queue_event();
        }
    }
}
