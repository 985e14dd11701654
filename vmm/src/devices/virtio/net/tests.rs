//! Device-level virtio-net tests: a real event manager, a real socket pair
//! as the backend (the test plays passt on the other end), and the guest
//! driver played through mock queues.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID,
};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::frame::{fold, ones_sum, HDR_LEN};
use super::{EgressPolicy, Ipv4Net, Net, NetDeviceConfig, StreamBackend, MAX_FRAME_LEN};
use crate::config::NetRateLimit;
use crate::devices::virtio::test_utils::{
    activate_context, guest_memory, read_mem, write_mem, Driver,
};
use crate::devices::virtio::{GuestMemory, VirtioDevice};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const RX_AREA: u64 = 0x10_0000;
const RX_STRIDE: u64 = 0x1_0000;
const TX_AREA: u64 = 0x80_0000;
const TX_SLOT: u64 = 0x2_0000;
const MEM_SIZE: usize = 0x100_0000;

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

struct Harness<'a> {
    mem: &'a GuestMemory,
    rx: Driver<'a>,
    tx: Driver<'a>,
    dev: Arc<Mutex<Net>>,
    em: Em,
    evts: Vec<EventFd>,
    rx_bufs: HashMap<u16, u64>,
    tx_slot: u64,
    /// The test's end of the backend socket (plays passt).
    peer: UnixStream,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemory, features: u64) -> Self {
        Self::build(
            mem,
            features,
            EgressPolicy::default(),
            &NetRateLimit::default(),
        )
    }

    pub(super) fn with_egress(mem: &'a GuestMemory, features: u64, egress: EgressPolicy) -> Self {
        Self::build(mem, features, egress, &NetRateLimit::default())
    }

    pub(super) fn with_rate_limit(
        mem: &'a GuestMemory,
        features: u64,
        limit: &NetRateLimit,
    ) -> Self {
        Self::build(mem, features, EgressPolicy::default(), limit)
    }

    fn build(
        mem: &'a GuestMemory,
        features: u64,
        egress: EgressPolicy,
        limit: &NetRateLimit,
    ) -> Self {
        let (ours, peer) = UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let backend = StreamBackend::new(Arc::new(ours)).unwrap();
        let net = Net::new(
            NetDeviceConfig {
                mac: MAC,
                mtu: 65520,
                trusted_checksums: true,
                egress,
            },
            Box::new(backend),
        )
        .and_then(|net| net.with_rate_limit(limit))
        .unwrap();
        let dev = Arc::new(Mutex::new(net));
        let mut em = Em::new().unwrap();
        em.add_subscriber(dev.clone());
        let rx = Driver::new(mem, 0, 256);
        let tx = Driver::new(mem, 0x1_0000, 256);
        let mut queues = vec![rx.queue(), tx.queue()];
        for q in &mut queues {
            q.set_event_idx(true);
        }
        let (ctx, evts) = activate_context(mem, queues);
        {
            let mut d = dev.lock().unwrap();
            d.common_mut()
                .features_mut()
                .write_driver(features | (1 << VIRTIO_F_VERSION_1));
            d.activate(ctx).unwrap();
        }
        let mut h = Harness {
            mem,
            rx,
            tx,
            dev,
            em,
            evts,
            rx_bufs: HashMap::new(),
            tx_slot: 0,
            peer,
        };
        h.pump();
        h
    }

    /// Runs the event loop until it has been idle for 20 ms (bounded).
    fn pump(&mut self) {
        for _ in 0..500 {
            if self.em.run_with_timeout(20).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop never went idle");
    }

    fn post_rx(&mut self, index: u64, len: u32) {
        let addr = RX_AREA + index * RX_STRIDE;
        let head = self.rx.push(&[(addr, len, true)]);
        self.rx_bufs.insert(head, addr);
    }

    fn kick(&mut self, queue: usize) {
        self.evts[queue].write(1).unwrap();
        self.pump();
    }

    /// Puts a tx chain made of `parts` (each one descriptor) and kicks.
    fn transmit(&mut self, parts: &[&[u8]]) {
        let mut addr = TX_AREA + (self.tx_slot % 8) * TX_SLOT;
        self.tx_slot += 1;
        let mut descs = Vec::new();
        for p in parts {
            write_mem(self.mem, addr, p);
            descs.push((addr, p.len() as u32, false));
            addr += p.len() as u64 + 16;
        }
        self.tx.push(&descs);
        self.kick(1);
    }

    /// Frames the device wrote to the backend.
    fn backend_frames(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut len = [0u8; 4];
                self.peer.read_exact(&mut len).unwrap();
                let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
                self.peer.read_exact(&mut f).unwrap();
                f
            })
            .collect()
    }

    fn assert_backend_silent(&mut self) {
        self.peer.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        let r = self.peer.read(&mut b);
        self.peer.set_nonblocking(false).unwrap();
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "backend received {r:?}"
        );
    }

    /// The backend sends one frame to the guest.
    fn inject(&mut self, frame: &[u8]) {
        self.peer
            .write_all(&(frame.len() as u32).to_be_bytes())
            .unwrap();
        self.peer.write_all(frame).unwrap();
        self.pump();
    }

    /// (head, used len, bytes) of every used rx buffer.
    fn used_rx(&mut self) -> Vec<(u16, u32, Vec<u8>)> {
        self.pump();
        self.rx
            .take_used()
            .into_iter()
            .map(|(head, len)| {
                let addr = self.rx_bufs[&head];
                (head, len, read_mem(self.mem, addr, len as usize))
            })
            .collect()
    }

    fn stats(&self) -> super::Stats {
        self.dev.lock().unwrap().stats()
    }
}

fn hdr(flags: u8, gso: u8, csum_start: u16, csum_offset: u16) -> [u8; HDR_LEN] {
    let mut h = [0u8; HDR_LEN];
    h[0] = flags;
    h[1] = gso;
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

/// An Ethernet frame of `len` bytes with a recognisable payload.
fn eth_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    f[0..6].copy_from_slice(&MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// Ethernet + IPv4 + UDP (10.0.2.15:1000 -> 10.0.2.2:53) with `payload`;
/// the UDP checksum field holds the pseudo-header sum, as a guest using
/// checksum offload leaves it.
fn udp_frame_partial(payload: &[u8]) -> Vec<u8> {
    let mut f = eth_frame(14, 0);
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
    let ip_sum = !fold(ones_sum(&ip));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut pseudo = vec![10, 0, 2, 15, 10, 0, 2, 2, 0, 17];
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let pseudo_sum = fold(ones_sum(&pseudo));
    f.extend_from_slice(&1000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&pseudo_sum.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn all_features() -> u64 {
    (1 << VIRTIO_NET_F_MRG_RXBUF) | (1 << VIRTIO_NET_F_GUEST_CSUM)
}

#[test]
fn config_space_and_features() {
    let mem = guest_memory(MEM_SIZE);
    let h = Harness::new(&mem, 0);
    let dev = h.dev.lock().unwrap();
    let mut cfg = [0u8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[0..6], &MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 65520, "mtu");
    let f = dev.avail_features();
    for bit in [0, 1, 3, 5, 15, 16, 32] {
        assert!(f & (1 << bit) != 0, "feature {bit} offered");
    }
    // Segmentation offloads are not offered.
    for bit in [7, 11] {
        assert!(f & (1 << bit) == 0, "feature {bit} not offered");
    }
    let mut far = [0xffu8; 4];
    dev.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0; 4]);
}

#[test]
fn tx_frame_reaches_the_backend() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let frame = eth_frame(1500, 3);
    // Header and frame in separate descriptors, the frame split in two.
    h.transmit(&[&hdr(0, 0, 0, 0), &frame[..100], &frame[100..]]);
    assert_eq!(h.tx.take_used().len(), 1);
    assert_eq!(h.backend_frames(1), vec![frame.clone()]);
    // Header and frame in one descriptor; a maximal frame.
    let big = eth_frame(MAX_FRAME_LEN, 9);
    let mut chain = hdr(0, 0, 0, 0).to_vec();
    chain.extend_from_slice(&big);
    h.transmit(&[&chain]);
    assert_eq!(h.backend_frames(1), vec![big]);
    assert_eq!(h.stats().tx_frames, 2);
}

/// Ethernet + IPv4 + TCP SYN 10.0.2.15:40000 -> `dst`:8080 (seq 1000).
fn tcp_syn_frame(dst: [u8; 4]) -> Vec<u8> {
    let mut f = eth_frame(14, 0);
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15];
    ip.extend_from_slice(&dst);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&8080u16.to_be_bytes());
    f.extend_from_slice(&1000u32.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

#[test]
fn blocked_frames_never_reach_the_backend_and_a_syn_is_reset() {
    let mem = guest_memory(MEM_SIZE);
    let egress = EgressPolicy {
        blocked: vec![Ipv4Net::host(std::net::Ipv4Addr::new(10, 0, 2, 2))],
    };
    let mut h = Harness::with_egress(&mem, all_features(), egress);
    h.post_rx(0, 2048);
    // UDP to the gateway, with a checksum left to the device: dropped.
    let udp = udp_frame_partial(b"query");
    h.transmit(&[&hdr(1, 0, 34, 6), &udp]);
    // A SYN to the gateway: dropped, answered with a reset.
    h.transmit(&[&hdr(0, 0, 0, 0), &tcp_syn_frame([10, 0, 2, 2])]);
    assert_eq!(h.tx.take_used().len(), 2, "both chains are consumed");
    h.assert_backend_silent();
    let s = h.stats();
    assert_eq!((s.tx_frames, s.tx_blocked, s.rx_frames), (0, 2, 1));
    let used = h.used_rx();
    assert_eq!(used.len(), 1);
    let reset = &used[0].2[HDR_LEN..];
    assert_eq!(used[0].1 as usize, HDR_LEN + 60);
    assert_eq!(&reset[0..6], &[2, 0, 0, 0, 0, 1], "to the guest's MAC");
    assert_eq!(&reset[26..34], &[10, 0, 2, 2, 10, 0, 2, 15]);
    assert_eq!(reset[34 + 13], 0x14, "RST|ACK");
    // Other destinations still pass.
    let ok = tcp_syn_frame([93, 184, 216, 34]);
    h.transmit(&[&hdr(0, 0, 0, 0), &ok]);
    assert_eq!(h.backend_frames(1), vec![ok]);
    assert_eq!(h.stats().tx_frames, 1);
}

#[test]
fn tx_checksum_is_completed() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let frame = udp_frame_partial(b"hello, checksum!!");
    // csum_start = UDP header (14 + 20), csum_offset = 6.
    h.transmit(&[&hdr(1, 0, 34, 6), &frame]);
    let sent = h.backend_frames(1).remove(0);
    assert_ne!(sent[40..42], frame[40..42], "checksum written");
    // A receiver's check: pseudo-header + UDP segment sums to 0xffff.
    let mut pseudo = vec![10, 0, 2, 15, 10, 0, 2, 2, 0, 17];
    pseudo.extend_from_slice(&sent[38..40]);
    let total = ones_sum(&pseudo) + ones_sum(&sent[34..]);
    assert_eq!(fold(total), 0xffff);
}

#[test]
fn hostile_tx_chains_are_consumed_and_dropped() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let frame = eth_frame(100, 1);
    // Runt: header plus 5 bytes.
    h.transmit(&[&hdr(0, 0, 0, 0), &frame[..5]]);
    // Header only, shorter than a header.
    h.transmit(&[&[0u8; 4]]);
    // GSO requested (never offered).
    h.transmit(&[&hdr(0, 1, 0, 0), &frame]);
    // Checksum position outside the frame, and overflowing.
    h.transmit(&[&hdr(1, 0, 99, 0), &frame]);
    h.transmit(&[&hdr(1, 0, 10, 89), &frame]);
    h.transmit(&[&hdr(1, 0, 0xffff, 0xffff), &frame]);
    // Oversized: one byte more than the largest frame.
    let mut big = hdr(0, 0, 0, 0).to_vec();
    big.extend_from_slice(&eth_frame(MAX_FRAME_LEN + 1, 0));
    h.transmit(&[&big]);
    // Descriptor beyond guest memory.
    h.tx.push(&[(MEM_SIZE as u64 - 8, 64, false)]);
    h.kick(1);
    // A chain that is all device-writable (nothing to read).
    h.tx.push(&[(TX_AREA, 200, true)]);
    h.kick(1);
    assert_eq!(h.tx.take_used().len(), 9, "every chain handed back");
    assert_eq!(h.stats().tx_dropped, 9);
    h.assert_backend_silent();
    // The device still works.
    h.transmit(&[&hdr(0, 0, 0, 0), &frame]);
    assert_eq!(h.backend_frames(1), vec![frame]);
}

#[test]
fn bogus_tx_avail_index_does_not_hang() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    h.tx.set_avail_idx(40_000);
    h.kick(1);
    h.assert_backend_silent();
}

#[test]
fn rx_frame_from_the_backend() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    h.post_rx(0, 2048);
    h.kick(0);
    let frame = eth_frame(1000, 5);
    h.inject(&frame);
    let used = h.used_rx();
    assert_eq!(used.len(), 1);
    let (_, len, bytes) = &used[0];
    assert_eq!(*len as usize, HDR_LEN + frame.len());
    assert_eq!(bytes[0], VIRTIO_NET_HDR_F_DATA_VALID as u8);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1, "num_buffers");
    assert_eq!(&bytes[HDR_LEN..], &frame[..]);
}

#[test]
fn rx_big_frame_spans_mergeable_buffers() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    for i in 0..32 {
        h.post_rx(i, 4096);
    }
    h.kick(0);
    let frame = eth_frame(65534, 11);
    h.inject(&frame);
    let used = h.used_rx();
    let need = (HDR_LEN + frame.len()).div_ceil(4096);
    assert_eq!(used.len(), need);
    let first = &used[0].2;
    assert_eq!(
        usize::from(u16::from_le_bytes([first[10], first[11]])),
        need
    );
    let data: Vec<u8> = used.iter().flat_map(|u| u.2.clone()).collect();
    assert_eq!(&data[HDR_LEN..], &frame[..]);
}

#[test]
fn rx_waits_for_buffers_then_delivers_in_order() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let f1 = eth_frame(300, 1);
    let f2 = eth_frame(400, 2);
    h.inject(&f1);
    h.inject(&f2);
    assert!(h.used_rx().is_empty(), "no buffers yet");
    assert_eq!(h.stats().rx_frames, 0);
    h.post_rx(0, 2048);
    h.kick(0);
    let used = h.used_rx();
    assert_eq!(used.len(), 1);
    assert_eq!(&used[0].2[HDR_LEN..], &f1[..]);
    h.post_rx(1, 2048);
    h.kick(0);
    let used = h.used_rx();
    assert_eq!(used.len(), 1);
    assert_eq!(&used[0].2[HDR_LEN..], &f2[..]);
}

#[test]
fn rx_without_mergeable_drops_frames_too_big_for_a_buffer() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, 0);
    h.post_rx(0, 1526);
    h.kick(0);
    h.inject(&eth_frame(3000, 1));
    assert!(h.used_rx().is_empty(), "the buffer is kept");
    assert_eq!(h.stats().rx_dropped, 1);
    let small = eth_frame(1500, 2);
    h.inject(&small);
    let used = h.used_rx();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].2[0], 0, "no DATA_VALID without GUEST_CSUM");
    assert_eq!(&used[0].2[HDR_LEN..], &small[..]);
}

#[test]
fn hostile_rx_buffers_are_returned_empty() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    // A first buffer too small for the header.
    h.post_rx(0, 4);
    h.kick(0);
    h.inject(&eth_frame(100, 0));
    let used = h.used_rx();
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), vec![0]);
    // A read-only buffer (no writable descriptor).
    h.rx.push(&[(RX_AREA, 2048, false)]);
    h.kick(0);
    h.inject(&eth_frame(100, 0));
    assert_eq!(h.rx.take_used().len(), 1);
    // A buffer outside guest memory.
    let head = h.rx.push(&[(MEM_SIZE as u64 - 16, 2048, true)]);
    h.kick(0);
    h.inject(&eth_frame(100, 0));
    assert_eq!(h.rx.take_used(), vec![(head, 0)]);
    assert_eq!(h.stats().rx_dropped, 3);
    assert_eq!(h.stats().rx_frames, 0);
}

#[test]
fn runts_and_a_bad_length_from_the_backend() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    h.post_rx(0, 2048);
    h.kick(0);
    h.inject(&[1, 2, 3]);
    assert!(h.used_rx().is_empty());
    assert_eq!(h.stats().rx_dropped, 1);
    // A length beyond any frame: the backend is dropped for good.
    h.peer.write_all(&u32::MAX.to_be_bytes()).unwrap();
    h.pump();
    assert!(h.dev.lock().unwrap().backend_dead);
    h.transmit(&[&hdr(0, 0, 0, 0), &eth_frame(60, 0)]);
    assert_eq!(h.tx.take_used().len(), 1, "tx still drains");
}

#[test]
fn backend_hangup_stops_watching() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    h.post_rx(0, 2048);
    h.kick(0);
    h.peer.shutdown(std::net::Shutdown::Both).unwrap();
    // pump() panics if the loop spins on the dead fd.
    h.pump();
    h.pump();
    assert!(h.dev.lock().unwrap().backend_dead);
}

#[test]
fn reset_and_reactivation() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    h.dev.lock().unwrap().reset();
    h.pump();
    assert!(!h.dev.lock().unwrap().is_active());
    // Frames arriving while inactive wait in the socket.
    let frame = eth_frame(200, 4);
    h.inject(&frame);
    let mut rx = Driver::new(&mem, 0x2_0000, 256);
    let tx = Driver::new(&mem, 0x3_0000, 256);
    let head = rx.push(&[(RX_AREA, 2048, true)]);
    let (ctx, _evts) = activate_context(&mem, vec![rx.queue(), tx.queue()]);
    {
        let mut d = h.dev.lock().unwrap();
        d.common_mut()
            .features_mut()
            .write_driver(all_features() | (1 << VIRTIO_F_VERSION_1));
        d.activate(ctx).unwrap();
    }
    h.pump();
    assert_eq!(rx.take_used(), vec![(head, (HDR_LEN + frame.len()) as u32)]);
    assert_eq!(
        &read_mem(&mem, RX_AREA + HDR_LEN as u64, frame.len()),
        &frame
    );
}

#[test]
fn tx_waits_for_a_full_backend_and_loses_nothing() {
    let mem = guest_memory(MEM_SIZE);
    let mut h = Harness::new(&mem, all_features());
    let frame = eth_frame(60_000, 7);
    let mut chain = hdr(0, 0, 0, 0).to_vec();
    chain.extend_from_slice(&frame);
    write_mem(&mem, TX_AREA, &chain);
    // Far more than the socket buffer plus the device's output limit.
    let n = 100;
    for _ in 0..n {
        h.tx.push(&[(TX_AREA, chain.len() as u32, false)]);
    }
    h.kick(1);
    let used = h.tx.take_used().len();
    assert!(
        used < n,
        "the device stopped at a full backend ({used} used)"
    );
    // Drain the backend: the device resumes on its own (EPOLLOUT).
    let mut got = 0;
    let reader = std::thread::spawn({
        let mut peer = h.peer.try_clone().unwrap();
        move || {
            let mut count = 0;
            while count < n {
                let mut len = [0u8; 4];
                peer.read_exact(&mut len).unwrap();
                let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
                peer.read_exact(&mut f).unwrap();
                assert_eq!(f.len(), 60_000);
                count += 1;
            }
            count
        }
    });
    for _ in 0..200 {
        h.pump();
        got += h.tx.take_used().len();
        if used + got == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(used + got, n);
    assert_eq!(reader.join().unwrap(), n);
    assert_eq!(h.stats().tx_frames, n as u64);
}

/// A TAP device in a private network namespace (root only; skipped
/// otherwise): frames the host kernel sends out of it (IPv6 neighbour
/// discovery once the link is up) come out of the backend, and frames
/// written while the link is down are dropped without an error.
#[test]
fn tap_backend_in_a_private_netns() {
    use super::{Backend, TapBackend};
    std::thread::spawn(|| {
        // SAFETY: unshare(2) on this thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!("skipped: cannot create a network namespace (not root)");
            return;
        }
        let name = "hsknet0";
        let mut tap = TapBackend::open(name).unwrap();
        let mut frame = Vec::new();
        assert!(!tap.recv(&mut frame).unwrap(), "nothing while down");
        assert!(tap.send(&eth_frame(60, 1)).unwrap(), "dropped while down");
        assert!(!tap.wants_write());
        // Bring the link up (SIOCSIFFLAGS on an AF_INET socket).
        // SAFETY: socket(2) with constant arguments.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(sock >= 0);
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(libc::IFF_UP as i16).to_ne_bytes());
        // SAFETY: SIOCSIFFLAGS reads a 40-byte `struct ifreq`.
        let rc = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, ifr.as_mut_ptr()) };
        // SAFETY: closing the socket made above.
        unsafe { libc::close(sock) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        let mut got = false;
        for _ in 0..300 {
            if tap.recv(&mut frame).unwrap() {
                got = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !got {
            eprintln!("skipped: the kernel sent nothing on the link (IPv6 disabled?)");
            return;
        }
        assert!(frame.len() >= 14 && frame.len() <= MAX_FRAME_LEN);
        assert_eq!(&frame[12..14], &[0x86, 0xdd], "an IPv6 frame");
    })
    .join()
    .unwrap();
}

#[path = "rate_limit_tests.rs"]
mod rate_limit;
