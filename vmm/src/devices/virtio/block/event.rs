//! Epoll glue of the block device: the activation eventfd and the queue
//! eventfd, both on the event-manager thread.

use event_manager::{EventOps, Events, MutEventSubscriber};

use super::Block;
use crate::devices::virtio::activation::CTL_DATA;

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        self.events.init(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.events.sync(ops);
        let data = events.data();
        if data != CTL_DATA && self.events.consume(data) {
            self.handle_queue_event();
        }
    }
}
