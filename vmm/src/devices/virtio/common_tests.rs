use std::collections::VecDeque;

use virtio_queue::QueueT;

use super::*;
use crate::devices::virtio::queue_loop::ChainSource;
use crate::devices::virtio::test_utils::{activate_context, guest_memory, Driver};

const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
const OFFERED: u64 = VERSION_1 | 0b1010;
const SIZES: [u16; 2] = [16, 16];

#[test]
fn features_pages_and_ack_masking() {
    let mut f = Features::new(OFFERED);
    assert_eq!(f.offered_page(0), 0b1010);
    assert_eq!(f.offered_page(1), 1, "VERSION_1 is bit 32");
    assert_eq!(f.offered_page(2), 0);
    f.write_driver_page(0, 0xffff_ffff);
    f.write_driver_page(1, 1);
    f.write_driver_page(7, 0xffff_ffff); // no such page: ignored
    assert!(!f.accept(), "bits the device never offered are refused");
    assert_eq!(f.acked(), OFFERED, "and never reported as acked");
    assert!(f.has(1) && f.has(3) && !f.has(0) && !f.has(2));
    assert!(
        !f.has(64) && !f.has(u32::MAX),
        "out-of-range bits are not acked"
    );
    f.write_driver_page(0, 0b10);
    assert!(f.accept());
    assert_eq!(f.acked(), VERSION_1 | 0b10);
    f.write_driver(0b10);
    assert!(!f.accept(), "VERSION_1 is required");
    f.reset();
    assert_eq!(f.acked(), 0);
}

fn common() -> VirtioCommon {
    VirtioCommon::new("test", 7, &SIZES, OFFERED).unwrap()
}

#[test]
fn activation_with_the_wrong_queue_count_is_refused() {
    let mem = guest_memory(0x10_0000);
    let mut c = common();
    let one = Driver::new(&mem, 0, 16);
    let (ctx, _evts) = activate_context(&mem, vec![one.queue()]);
    let err = c.activate(ctx).unwrap_err();
    assert!(
        matches!(
            err,
            ActivateError::QueueCount {
                device: "test",
                expected: 2,
                got: 1
            }
        ),
        "{err}"
    );
    assert!(!c.is_activated());
    let (ctx, _evts) = activate_context(&mem, vec![one.queue(), one.queue(), one.queue()]);
    assert!(c.activate(ctx).is_err());
    assert!(c.activated().is_none());
}

#[test]
fn activate_then_reset_returns_to_inactive() {
    let mem = guest_memory(0x10_0000);
    let mut c = common();
    assert!(!c.reset(), "reset of an inactive device");
    c.features_mut().write_driver(OFFERED);
    let (q0, q1) = (Driver::new(&mem, 0, 16), Driver::new(&mem, 0x1000, 16));
    let (ctx, evts) = activate_context(&mem, vec![q0.queue(), q1.queue()]);
    c.activate(ctx).unwrap();
    assert!(c.is_activated());
    assert_eq!(c.activated().unwrap().queues.len(), 2);
    assert!(c.has_feature(1));
    // Queue eventfds of this activation are recognised by index.
    evts[1].write(1).unwrap();
    assert_eq!(c.queue_event(1), Some(1));
    assert_eq!(c.queue_event(2), None);
    assert_eq!(c.queue_event(u32::MAX), None);
    assert!(c.reset(), "was activated");
    assert!(!c.is_activated());
    assert_eq!(c.features().acked(), 0, "features forgotten");
    assert_eq!(c.queue_event(0), None, "eventfds retired");
}

/// A driver played by a script: chains are head indexes; `arrive` holds
/// the chains the driver publishes while the device enables notifications
/// (one batch per call), the race the loop must not lose.
#[derive(Default)]
struct Scripted {
    available: VecDeque<u16>,
    arrive: VecDeque<Vec<u16>>,
    /// A garbage ring: it always claims more chains than pop yields.
    bogus: bool,
    last: Option<u16>,
    used: Vec<(u16, u32)>,
    calls: Vec<&'static str>,
}

impl ChainSource for Scripted {
    type Chain = u16;
    fn head(chain: &u16) -> u16 {
        *chain
    }
    fn disable_notification(&mut self) -> bool {
        self.calls.push("disable");
        true
    }
    fn enable_notification(&mut self) -> bool {
        self.calls.push("enable");
        if let Some(batch) = self.arrive.pop_front() {
            self.available.extend(batch);
        }
        self.bogus || !self.available.is_empty()
    }
    fn pop(&mut self) -> Option<u16> {
        self.last = self.available.pop_front();
        self.last
    }
    fn unpop(&mut self) {
        if let Some(chain) = self.last.take() {
            self.available.push_front(chain);
        }
    }
    fn add_used(&mut self, head: u16, len: u32) {
        self.used.push((head, len));
    }
}

#[test]
fn drain_rechecks_after_enabling_notifications() {
    let mut q = Scripted {
        available: VecDeque::from([1, 2]),
        arrive: VecDeque::from([vec![3]]),
        ..Scripted::default()
    };
    assert!(drain(&mut q, |c| ChainDone::Used(u32::from(c) * 10)));
    assert_eq!(
        q.used,
        vec![(1, 10), (2, 20), (3, 30)],
        "the late chain too"
    );
    assert_eq!(q.calls, ["disable", "enable", "disable", "enable"]);
    // Nothing available at first, a chain arrives during the enable: it
    // is still handled.
    let mut q = Scripted {
        arrive: VecDeque::from([vec![9]]),
        ..Scripted::default()
    };
    assert!(drain(&mut q, |_| ChainDone::Used(0)));
    assert_eq!(q.used, vec![(9, 0)]);
    assert_eq!(
        q.calls.last(),
        Some(&"enable"),
        "ends with notifications on"
    );
}

#[test]
fn drain_gives_up_on_a_ring_that_claims_phantom_chains() {
    let mut q = Scripted {
        available: VecDeque::from([1]),
        bogus: true,
        ..Scripted::default()
    };
    assert!(drain(&mut q, |_| ChainDone::Used(0)));
    assert_eq!(q.used, vec![(1, 0)]);
    assert_eq!(q.calls.iter().filter(|c| **c == "enable").count(), 3);
    let mut q = Scripted {
        bogus: true,
        ..Scripted::default()
    };
    assert!(!drain(&mut q, |_| ChainDone::Used(0)));
    assert_eq!(q.calls.len(), 4, "two empty passes: {:?}", q.calls);
}

#[test]
fn drain_stops_where_the_device_says() {
    let mut q = Scripted {
        available: VecDeque::from([1, 2, 3]),
        ..Scripted::default()
    };
    let used = drain(&mut q, |c| {
        if c == 2 {
            ChainDone::UsedThenStop(5)
        } else {
            ChainDone::Used(1)
        }
    });
    assert!(used);
    assert_eq!(q.used, vec![(1, 1), (2, 5)]);
    assert_eq!(q.available, [3], "left for later");
    assert_eq!(q.calls, ["disable"], "notifications stay suppressed");

    let mut q = Scripted {
        available: VecDeque::from([1, 2]),
        ..Scripted::default()
    };
    let used = drain(&mut q, |c| {
        if c == 2 {
            ChainDone::Unused
        } else {
            ChainDone::Used(1)
        }
    });
    assert!(used);
    assert_eq!(q.used, vec![(1, 1)]);
    assert_eq!(q.available, [2], "the unused chain is put back");
    let mut q = Scripted {
        available: VecDeque::from([4]),
        ..Scripted::default()
    };
    assert!(!drain(&mut q, |_| ChainDone::Unused));
    assert_eq!(q.available, [4]);
}

#[test]
fn drain_over_a_guest_queue() {
    let mem = guest_memory(0x10_0000);
    let mut c = common();
    let mut drv = Driver::new(&mem, 0, 16);
    let other = Driver::new(&mem, 0x1000, 16);
    let (ctx, _evts) = activate_context(&mem, vec![drv.queue(), other.queue()]);
    c.activate(ctx).unwrap();
    let a = drv.push(&[(0x8000, 64, true)]);
    let b = drv.push(&[(0x9000, 16, false), (0xa000, 32, true)]);
    let active = c.activated_mut().unwrap();
    let mut seen = Vec::new();
    let used = active.drain(0, |_, chain| {
        seen.push(chain.head_index());
        ChainDone::Used(u32::from(chain.head_index()) + 1)
    });
    assert!(used);
    assert_eq!(seen, vec![a, b]);
    assert_eq!(
        drv.take_used(),
        vec![(a, u32::from(a) + 1), (b, u32::from(b) + 1)]
    );
    assert!(active.needs_interrupt(0));
    assert!(!active.drain(0, |_, _| ChainDone::Used(0)), "nothing left");
    assert!(!active.drain(5, |_, _| ChainDone::Used(0)), "no such queue");
    assert_eq!(active.queues[0].next_avail(), 2);
}
