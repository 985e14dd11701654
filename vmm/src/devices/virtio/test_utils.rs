//! Test helpers: the driver side of a split virtqueue over virtio-queue's
//! mock queue, with descriptor chains placed by hand.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::{Descriptor as SplitDescriptor, VirtqUsedElem};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::GuestMemory;

/// Guest memory of `size` bytes at address 0.
pub fn guest_memory(size: usize) -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory")
}

/// One descriptor: (guest address, length, device-writable).
pub type Desc = (u64, u32, bool);

/// The driver's view of one queue.
pub struct Driver<'a> {
    mem: &'a GuestMemory,
    vq: MockSplitQueue<'a, GuestMemory>,
    size: u16,
    next_desc: u16,
    next_used: u16,
}

impl<'a> Driver<'a> {
    /// A queue of `size` entries whose rings start at `base`.
    pub fn new(mem: &'a GuestMemory, base: u64, size: u16) -> Self {
        Self {
            mem,
            vq: MockSplitQueue::create(mem, GuestAddress(base), size),
            size,
            next_desc: 0,
            next_used: 0,
        }
    }

    /// The device side of this queue, ready to use.
    pub fn queue(&self) -> Queue {
        self.vq.create_queue().expect("queue")
    }

    /// The mock queue (ring addresses for transport tests).
    pub fn mock(&self) -> &MockSplitQueue<'a, GuestMemory> {
        &self.vq
    }

    /// Makes a chain of `descs` available; returns its head index.
    pub fn push(&mut self, descs: &[Desc]) -> u16 {
        assert!(!descs.is_empty() && descs.len() <= usize::from(self.size));
        if usize::from(self.next_desc) + descs.len() > usize::from(self.size) {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = head + i as u16 + 1;
            let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            self.vq
                .desc_table()
                .store(head + i as u16, desc)
                .expect("descriptor");
        }
        self.next_desc += descs.len() as u16;
        self.publish(head);
        head
    }

    /// Appends `head` to the available ring.
    pub fn publish(&mut self, head: u16) {
        let avail = self.vq.avail_addr().0;
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(avail + 2))
            .expect("avail idx");
        let slot = avail + 4 + u64::from(idx % self.size) * 2;
        self.mem.write_obj(head, GuestAddress(slot)).expect("avail");
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
            .expect("avail idx");
    }

    /// Writes a raw available index (for hostile-driver tests).
    pub fn set_avail_idx(&mut self, idx: u16) {
        let avail = self.vq.avail_addr().0;
        self.mem
            .write_obj(idx, GuestAddress(avail + 2))
            .expect("avail idx");
    }

    /// Used entries added by the device since the last call: (head, len).
    pub fn take_used(&mut self) -> Vec<(u16, u32)> {
        let used = self.vq.used_addr().0;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).expect("used idx");
        let mut out = Vec::new();
        while self.next_used != idx {
            let slot = used + 4 + u64::from(self.next_used % self.size) * 8;
            let elem: VirtqUsedElem = self.mem.read_obj(GuestAddress(slot)).expect("used");
            out.push((elem.id() as u16, elem.len()));
            self.next_used = self.next_used.wrapping_add(1);
        }
        out
    }
}

/// Reads `len` bytes of guest memory at `addr`.
pub fn read_mem(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).expect("read");
    v
}

/// Writes `data` to guest memory at `addr`.
pub fn write_mem(mem: &GuestMemory, addr: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(addr)).expect("write");
}

/// What the transport hands a device at DRIVER_OK, for `queues`, plus the
/// test's ends of the queue eventfds (write to kick a queue).
pub fn activate_context(
    mem: &GuestMemory,
    queues: Vec<Queue>,
) -> (super::ActivateContext, Vec<vmm_sys_util::eventfd::EventFd>) {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    let evts: Vec<EventFd> = queues
        .iter()
        .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
        .collect();
    let ctx = super::ActivateContext {
        mem: mem.clone(),
        queues,
        queue_evts: evts.iter().map(|e| e.try_clone().expect("dup")).collect(),
        interrupt: std::sync::Arc::new(super::VirtioInterrupt::new(
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        )),
    };
    (ctx, evts)
}

/// Reads the 32-bit register at `off` of a virtio-mmio transport.
pub fn mmio_read(m: &mut super::mmio::MmioTransport, off: u64) -> u32 {
    use crate::bus::BusDevice;
    let mut b = [0u8; 4];
    m.read(off, &mut b);
    u32::from_le_bytes(b)
}

/// Writes `v` to the 32-bit register at `off` of a virtio-mmio transport.
pub fn mmio_write(m: &mut super::mmio::MmioTransport, off: u64, v: u32) {
    use crate::bus::BusDevice;
    m.write(off, &v.to_le_bytes());
}
