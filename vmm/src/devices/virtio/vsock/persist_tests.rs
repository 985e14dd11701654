//! The TRANSPORT_RESET event of a restored vsock device, and its state
//! through serde.

use virtio_queue::QueueT;

use super::*;
use crate::devices::virtio::test_utils::Driver;
use crate::devices::virtio::test_utils::{activate_context, guest_memory, read_mem, write_mem};
use crate::devices::virtio::vsock::VsockConfig;
use crate::devices::virtio::{GuestMemory, VirtioDevice, INT_VRING};

const EVENT_BUF: u64 = 0x8_0000;

struct Fixture<'a> {
    dev: Vsock,
    ev: Driver<'a>,
    _dir: tempfile::TempDir,
}

fn fixture(mem: &GuestMemory) -> Fixture<'_> {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Vsock::new(VsockConfig {
        guest_cid: 7,
        uds_path: dir.path().join("v.sock"),
        listener: None,
        streams: super::super::VsockStreams::Raw,
    })
    .unwrap();
    let rx = Driver::new(mem, 0, 256);
    let tx = Driver::new(mem, 0x1_0000, 256);
    let ev = Driver::new(mem, 0x2_0000, 256);
    let mut queues = vec![rx.queue(), tx.queue(), ev.queue()];
    for q in &mut queues {
        q.set_event_idx(true);
    }
    let (ctx, _evts) = activate_context(mem, queues);
    dev.activate(ctx).unwrap();
    Fixture { dev, ev, _dir: dir }
}

fn interrupt_status(dev: &Vsock) -> u32 {
    dev.common().activated().unwrap().interrupt.status()
}

#[test]
fn reset_event_goes_into_an_available_buffer() {
    let mem = guest_memory(0x10_0000);
    let mut f = fixture(&mem);
    write_mem(&mem, EVENT_BUF, &[0xff; 8]);
    let head = f.ev.push(&[(EVENT_BUF, 8, true)]);
    f.dev.transport_reset();
    assert!(!f.dev.transport_reset_pending());
    assert_eq!(f.ev.take_used(), [(head, 4)]);
    assert_eq!(
        read_mem(&mem, EVENT_BUF, 8),
        [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(interrupt_status(&f.dev) & INT_VRING, INT_VRING);
    // One event only.
    f.ev.push(&[(EVENT_BUF, 8, true)]);
    f.dev.run_queues();
    assert!(f.ev.take_used().is_empty());
}

#[test]
fn reset_event_waits_for_a_buffer() {
    let mem = guest_memory(0x10_0000);
    let mut f = fixture(&mem);
    f.dev.transport_reset();
    assert!(f.dev.transport_reset_pending());
    assert_eq!(interrupt_status(&f.dev), 0);
    // A buffer too small for the event is handed back empty.
    let small = f.ev.push(&[(EVENT_BUF, 2, true)]);
    f.dev.run_queues();
    assert_eq!(f.ev.take_used(), [(small, 0)]);
    assert!(f.dev.transport_reset_pending());
    // The driver adds a buffer and kicks the queue.
    write_mem(&mem, EVENT_BUF, &[0xff; 4]);
    let head = f.ev.push(&[(EVENT_BUF, 4, true)]);
    f.dev.run_queues();
    assert!(!f.dev.transport_reset_pending());
    assert_eq!(f.ev.take_used(), [(head, 4)]);
    assert_eq!(read_mem(&mem, EVENT_BUF, 4), [0; 4]);
    assert_eq!(interrupt_status(&f.dev) & INT_VRING, INT_VRING);
}

#[test]
fn a_driver_reset_drops_the_pending_event() {
    let mem = guest_memory(0x10_0000);
    let mut f = fixture(&mem);
    f.dev.transport_reset();
    f.dev.reset();
    assert!(!f.dev.transport_reset_pending());
}

#[test]
fn state_round_trips_through_serde() {
    let mem = guest_memory(0x10_0000);
    let f = fixture(&mem);
    let state = f.dev.save_state();
    assert_eq!(state, VsockState { guest_cid: 7 });
    let bytes = postcard::to_stdvec(&state).unwrap();
    assert_eq!(postcard::from_bytes::<VsockState>(&bytes).unwrap(), state);
}
