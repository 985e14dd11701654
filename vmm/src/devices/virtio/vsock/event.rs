//! Epoll glue of the vsock device: the activation eventfd, the queue
//! eventfds, the Unix listener and every client or connection socket, all
//! on the event-manager thread.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::Vsock;
use super::muxer::EpollChange;
use crate::devices::virtio::activation::CTL_DATA;

/// `Events::data` of the listener.
const LISTENER_DATA: u32 = 100;
/// `Events::data` of client and connection sockets (looked up by fd).
const CONN_DATA: u32 = 101;
/// `Events::data` of the accept back-off timer.
const BACKOFF_DATA: u32 = 102;

impl Vsock {
    /// Applies the muxer's epoll changes in order, closing sockets only
    /// after their removal.
    fn apply_changes(&mut self, ops: &mut EventOps) {
        for change in self.muxer.take_changes() {
            let result = match change {
                EpollChange::Add(fd, set) => ops.add(Events::with_data_raw(fd, CONN_DATA, set)),
                EpollChange::Modify(fd, set) => {
                    ops.modify(Events::with_data_raw(fd, CONN_DATA, set))
                }
                EpollChange::Remove(fd, stream) => {
                    let r = ops.remove(Events::empty_raw(fd));
                    drop(stream);
                    r
                }
                EpollChange::Close(stream) => {
                    drop(stream);
                    Ok(())
                }
                EpollChange::ListenerOff => ops.remove(Events::empty(self.muxer.listener())),
                EpollChange::ListenerOn => ops.add(listener_events(self)),
            };
            if let Err(e) = result {
                crate::log_limited!(log::Level::Warn, "vsock: epoll update: {e:?}");
            }
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        self.common.init_events(ops);
        if let Err(e) = ops.add(listener_events(self)) {
            log::error!("vsock: cannot register the listener: {e:?}");
        }
        let timer = Events::with_data(self.muxer.backoff_timer(), BACKOFF_DATA, EventSet::IN);
        if let Err(e) = ops.add(timer) {
            log::error!("vsock: cannot register the back-off timer: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.common.sync_events(ops);
        match events.data() {
            CTL_DATA => {}
            LISTENER_DATA => self.muxer.handle_listener(),
            BACKOFF_DATA => self.muxer.handle_backoff(),
            CONN_DATA => self.muxer.handle_fd_event(events.fd(), events.event_set()),
            // A queue kick: the queues are run below.
            q if self.common.queue_event(q).is_some() => {}
            other => log::debug!("vsock: unexpected event data {other}"),
        }
        self.run_queues();
        self.apply_changes(ops);
    }
}

/// The listener's registration.
fn listener_events(vsock: &Vsock) -> Events {
    Events::with_data(vsock.muxer.listener(), LISTENER_DATA, EventSet::IN)
}
