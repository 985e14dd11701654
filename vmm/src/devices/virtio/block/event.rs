//! Epoll glue of the block device: the activation eventfd and the queue
//! eventfd, both on the event-manager thread.

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::Block;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        self.common.init_events(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.common.sync_events(ops);
        if self.common.queue_event(events.data()).is_some() {
            self.handle_queue_event();
        }
    }
}
