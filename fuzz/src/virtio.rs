//! Targets for the virtio devices, driven as a guest drives them: through
//! the virtio-mmio register window ([`MmioTransport`]) and guest memory,
//! both under the fuzzer's control, with the device on a real
//! [`EventManager`] (the VMM's event loop) and real host-side ends (a
//! memfd disk, a socket pair as passt, Unix sockets for vsock).
//!
//! Input layout: byte 0 flags (device options), byte 1 a mask of
//! features the driver refuses, byte 2 the length N of the operation
//! stream that follows, then N operation bytes, then the first bytes of
//! guest memory (where the queues' rings live, so descriptor tables and
//! available rings are the fuzzer's).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress};
use vmm::bus::BusDevice;
use vmm::devices::virtio::block::{Block, BlockConfig};
use vmm::devices::virtio::mmio::MmioTransport;
use vmm::devices::virtio::net::{EgressPolicy, Ipv4Net, Net, NetDeviceConfig, StreamBackend};
use vmm::devices::virtio::vsock::{Vsock, VsockConfig};
use vmm::devices::virtio::{GuestMemory, VirtioDevice, VirtioInterrupt};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory size: small, so random descriptors often land in it.
const MEM_SIZE: usize = 0x1_0000;
/// Entries per queue.
const QUEUE_SIZE: u32 = 16;
/// Each queue's rings: descriptor table, then available, then used ring.
const RING_STRIDE: u64 = 0x300;
/// Event-loop rounds per pump (bounded: a device that keeps itself busy
/// forever is a finding, not a hang of the harness).
const PUMP_ROUNDS: usize = 16;

// virtio-mmio registers (virtio 1.x, section 4.2.2).
const REG_DEVICE_FEATURES: u64 = 0x10;
const REG_DEVICE_FEATURES_SEL: u64 = 0x14;
const REG_DRIVER_FEATURES: u64 = 0x20;
const REG_DRIVER_FEATURES_SEL: u64 = 0x24;
const REG_QUEUE_SEL: u64 = 0x30;
const REG_QUEUE_NUM: u64 = 0x38;
const REG_QUEUE_READY: u64 = 0x44;
const REG_STATUS: u64 = 0x70;
const REG_QUEUE_DESC_LOW: u64 = 0x80;
const REG_QUEUE_AVAIL_LOW: u64 = 0x90;
const REG_QUEUE_USED_LOW: u64 = 0xa0;
const CONFIG_OFFSET: u64 = 0x100;
// Device status bits.
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
/// Feature bits byte 1 of the input may refuse, one per bit: indirect
/// descriptors, event index, mergeable rx buffers, csum, guest csum,
/// host TSO4, guest TSO4, MAC.
const REFUSABLE: [u32; 8] = [28, 29, 15, 0, 1, 11, 7, 5];

type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A fuzz input split into its parts.
struct Input<'a> {
    flags: u8,
    refused: u8,
    ops: &'a [u8],
    memory: &'a [u8],
}

impl<'a> Input<'a> {
    fn split(data: &'a [u8]) -> Input<'a> {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let rest = data.get(3..).unwrap_or_default();
        let n = usize::from(byte(2)).min(rest.len());
        let (ops, memory) = rest.split_at(n);
        Input {
            flags: byte(0),
            refused: byte(1),
            ops,
            memory,
        }
    }
}

/// A device behind its transport, on an event loop.
struct Rig {
    em: Em,
    mmio: MmioTransport,
    queues: usize,
}

impl Rig {
    /// Wraps `device`, then plays a well-behaved driver's initialisation
    /// (so the fuzzer starts from an activated device).
    fn new<D>(device: D, mem: GuestMemory, refused: u8) -> Option<Rig>
    where
        D: VirtioDevice + MutEventSubscriber + Send + 'static,
    {
        let queues = device.common().queue_sizes().len();
        let device = Arc::new(Mutex::new(device));
        let mut em = Em::new().ok()?;
        em.add_subscriber(device.clone());
        let interrupt = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).ok()?));
        let mmio = MmioTransport::new(mem, device, interrupt).ok()?;
        let mut rig = Rig { em, mmio, queues };
        rig.write(REG_STATUS, ACKNOWLEDGE);
        rig.write(REG_STATUS, ACKNOWLEDGE | DRIVER);
        let mut refuse = 0u64;
        for (i, bit) in REFUSABLE.iter().enumerate() {
            if refused & (1 << i) != 0 {
                refuse |= 1 << bit;
            }
        }
        for page in 0..2u32 {
            rig.write(REG_DEVICE_FEATURES_SEL, page);
            let offered = rig.read(REG_DEVICE_FEATURES);
            rig.write(REG_DRIVER_FEATURES_SEL, page);
            let refused_page = (refuse >> (32 * page)) as u32;
            rig.write(REG_DRIVER_FEATURES, offered & !refused_page);
        }
        rig.write(REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        for q in 0..queues as u32 {
            let base = u64::from(q) * RING_STRIDE;
            rig.write(REG_QUEUE_SEL, q);
            rig.write(REG_QUEUE_NUM, QUEUE_SIZE);
            rig.write(REG_QUEUE_DESC_LOW, base as u32);
            rig.write(REG_QUEUE_AVAIL_LOW, (base + 0x100) as u32);
            rig.write(REG_QUEUE_USED_LOW, (base + 0x200) as u32);
            rig.write(REG_QUEUE_READY, 1);
        }
        rig.write(REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        rig.pump();
        Some(rig)
    }

    fn write(&mut self, offset: u64, value: u32) {
        self.mmio.write(offset, &value.to_le_bytes());
    }

    fn read(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.mmio.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn kick(&mut self, queue: usize) {
        if let Some(evt) = self.mmio.queue_evts().get(queue) {
            let _ = evt.write(1);
        }
    }

    fn pump(&mut self) {
        for _ in 0..PUMP_ROUNDS {
            match self.em.run_with_timeout(0) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Kicks every queue, then plays the operation stream: kicks, event
    /// loop rounds, register and config-space reads and writes (a reset
    /// included), and for `peer` bytes the host side sends.
    fn play(&mut self, ops: &[u8], mut peer: Option<&mut UnixStream>) {
        for q in 0..self.queues {
            self.kick(q);
        }
        self.pump();
        let mut ops = ops.iter().copied();
        let mut next = || ops.next();
        while let Some(op) = next() {
            match op % 8 {
                0 | 1 => {
                    self.kick(usize::from(op / 8) % self.queues.max(1));
                    self.pump();
                }
                2 => self.pump(),
                3 => {
                    let reg = u64::from(next().unwrap_or(0) & 0x3f) * 4;
                    let v = u32::from_le_bytes([
                        next().unwrap_or(0),
                        next().unwrap_or(0),
                        next().unwrap_or(0),
                        next().unwrap_or(0),
                    ]);
                    self.write(reg, v);
                }
                4 => {
                    let reg = u64::from(next().unwrap_or(0) & 0x3f) * 4;
                    let _ = self.read(reg);
                }
                5 => {
                    let off = u64::from(next().unwrap_or(0));
                    let len = usize::from(next().unwrap_or(0) % 9);
                    let bytes: Vec<u8> = (0..len).map(|_| next().unwrap_or(0)).collect();
                    self.mmio.write(CONFIG_OFFSET + off, &bytes);
                }
                6 => {
                    let off = u64::from(next().unwrap_or(0));
                    let mut buf = vec![0u8; usize::from(next().unwrap_or(0) % 9)];
                    self.mmio.read(CONFIG_OFFSET + off, &mut buf);
                }
                _ => {
                    let len = usize::from(next().unwrap_or(0));
                    let bytes: Vec<u8> = (0..len).map_while(|_| next()).collect();
                    if let Some(p) = peer.as_deref_mut() {
                        let _ = p.write(&bytes);
                    }
                    self.pump();
                }
            }
        }
    }
}

/// Guest memory with `content` at address 0 (the rest zero).
fn guest_memory(content: &[u8]) -> Option<GuestMemory> {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
    let n = content.len().min(MEM_SIZE);
    mem.write_slice(&content[..n], GuestAddress(0)).ok()?;
    Some(mem)
}

/// virtio-blk on a 32 KiB memfd disk; flag bit 0: read-only.
pub fn virtio_blk(data: &[u8]) {
    let input = Input::split(data);
    let Some(mem) = guest_memory(input.memory) else {
        return;
    };
    let Ok(disk) = rustix::fs::memfd_create("fuzz-disk", rustix::fs::MemfdFlags::CLOEXEC) else {
        return;
    };
    if rustix::fs::ftruncate(&disk, 64 * 512).is_err() {
        return;
    }
    let path = PathBuf::from(format!("/proc/self/fd/{}", disk.as_raw_fd()));
    let Ok(block) = Block::new(BlockConfig {
        path: Some(path),
        read_only: input.flags & 1 != 0,
        serial: "fuzz".into(),
        rate_limit: Default::default(),
    }) else {
        return;
    };
    if let Some(mut rig) = Rig::new(block, mem, input.refused) {
        rig.play(input.ops, None);
    }
}

/// virtio-net on a socket pair playing passt (the peer's writes reach the
/// rx path); flag bit 0: the egress policy is open (host access allowed),
/// bit 1: the backend's checksums are trusted.
pub fn virtio_net(data: &[u8]) {
    let input = Input::split(data);
    let Some(mem) = guest_memory(input.memory) else {
        return;
    };
    let Ok((ours, mut peer)) = UnixStream::pair() else {
        return;
    };
    let _ = peer.set_nonblocking(true);
    let Ok(backend) = StreamBackend::new(Arc::new(ours)) else {
        return;
    };
    // As in passt mode: the gateway and loopback are kept from the host.
    let egress = EgressPolicy {
        blocked: ["10.0.2.2/32", "127.0.0.0/8", "0.0.0.0/8"]
            .iter()
            .filter_map(|n| n.parse::<Ipv4Net>().ok())
            .filter(|_| input.flags & 1 == 0)
            .collect(),
    };
    let config = NetDeviceConfig {
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        mtu: 65520,
        trusted_checksums: input.flags & 2 != 0,
        egress,
    };
    let Ok(net) = Net::new(config, Box::new(backend)) else {
        return;
    };
    if let Some(mut rig) = Rig::new(net, mem, input.refused) {
        rig.play(input.ops, Some(&mut peer));
    }
}

/// A directory for the vsock device's Unix sockets, one per process.
fn socket_dir() -> Option<&'static tempfile::TempDir> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().ok()).as_ref()
}

/// virtio-vsock with its host side on Unix sockets. Flag bit 0: the agent-
/// frame gate is on and host port 1024 has a listener (which never
/// accepts: connections wait in its backlog, so guest data flows through the
/// gate into their buffers); guest connections to other ports P try
/// `<socket>_P`, which nobody listens on.
pub fn virtio_vsock(data: &[u8]) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let input = Input::split(data);
    let Some(mem) = guest_memory(input.memory) else {
        return;
    };
    let Some(dir) = socket_dir() else {
        return;
    };
    let uds_path = dir
        .path()
        .join(format!("v{}.sock", NEXT.fetch_add(1, Ordering::Relaxed)));
    let gated = input.flags & 1 != 0;
    let mut port_path = uds_path.clone().into_os_string();
    port_path.push("_1024");
    let _port_listener = match gated {
        true => match std::os::unix::net::UnixListener::bind(&port_path) {
            Ok(l) => Some(l),
            Err(_) => return,
        },
        false => None,
    };
    let streams = match gated {
        true => vmm::VsockStreams::AgentFrames,
        false => vmm::VsockStreams::Raw,
    };
    let Ok(vsock) = Vsock::new(VsockConfig {
        guest_cid: 3,
        uds_path: uds_path.clone(),
        listener: None,
        streams,
    }) else {
        let _ = std::fs::remove_file(&port_path);
        return;
    };
    if let Some(mut rig) = Rig::new(vsock, mem, input.refused) {
        rig.play(input.ops, None);
    }
    let _ = std::fs::remove_file(uds_path);
    let _ = std::fs::remove_file(port_path);
}
