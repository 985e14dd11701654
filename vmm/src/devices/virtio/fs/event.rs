//! Epoll glue of the virtio-fs device, on the event-manager thread: the
//! activation eventfd (the backend is started and stopped from here), the
//! backend's call eventfds (registered by [`VirtioCommon`] in place of the
//! queue eventfds, which belong to the backend) and the vhost-user socket,
//! watched for hang-up only.
//!
//! [`VirtioCommon`]: crate::devices::virtio::VirtioCommon

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::Fs;
use crate::devices::virtio::activation::CTL_DATA;

/// `Events::data` of the vhost-user socket.
const SOCKET_DATA: u32 = 100;

impl MutEventSubscriber for Fs {
    fn init(&mut self, ops: &mut EventOps) {
        self.common.init_events(ops);
        let hangup = EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR;
        let events = Events::with_data(self.backend.socket(), SOCKET_DATA, hangup);
        if let Err(e) = ops.add(events) {
            log::error!("virtio-fs: cannot watch the vhost-user socket: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.common.sync_events(ops);
        match events.data() {
            CTL_DATA => {}
            SOCKET_DATA => {
                crate::log_limited!(
                    log::Level::Error,
                    "virtio-fs: the vhost-user backend hung up; its requests will not complete"
                );
                self.backend.set_broken();
                // Level-triggered: it would be reported again and again.
                if let Err(e) = ops.remove(Events::empty(self.backend.socket())) {
                    log::debug!("virtio-fs: unwatching the socket: {e:?}");
                }
            }
            // A call eventfd: the backend used buffers of that queue.
            q if self.common.queue_event(q).is_some() => self.signal_used(),
            other => log::debug!("virtio-fs: unexpected event data {other}"),
        }
        self.sync_backend();
    }
}
