//! The virtio-fs device against a scripted vhost-user backend (the other
//! end of a socket pair): tag checks, config space, feature masking, the
//! messages of set-up, activation and reset, and a backend that goes away.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_bindings::virtio_config::{VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::device::config_space;
use super::vhost_user::{offered_features, protocol_features_to_ack};
use super::*;
use crate::devices::virtio::test_utils::{activate_context, Driver};
use crate::devices::virtio::VirtioDevice;
use vhost::vhost_user::message::VhostUserProtocolFeatures;

const PROTOCOL_FEATURES: u64 = 1 << 30;
const LOG_ALL: u64 = 1 << 26;
const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;

// vhost-user request codes.
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const SET_VRING_ENABLE: u32 = 18;
const NEED_REPLY: u32 = 0x8;

/// The requests a fake backend got: code and payload.
type Log = Arc<Mutex<Vec<(u32, Vec<u8>)>>>;

/// A backend offering `features` and `protocol` features that answers
/// every request (and every NEED_REPLY with success) until the socket
/// closes.
fn fake_backend(features: u64, protocol: u64) -> (UnixStream, Log, JoinHandle<()>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    let thread = std::thread::spawn(move || loop {
        let mut hdr = [0u8; 12];
        if theirs.read_exact(&mut hdr).is_err() {
            return;
        }
        let word = |i: usize| u32::from_le_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
        let (code, flags, size) = (word(0), word(1), word(2));
        let mut body = vec![0u8; size as usize];
        if theirs.read_exact(&mut body).is_err() {
            return;
        }
        log2.lock().unwrap().push((code, body.clone()));
        let reply: Option<Vec<u8>> = match code {
            GET_FEATURES => Some(features.to_le_bytes().to_vec()),
            GET_PROTOCOL_FEATURES => Some(protocol.to_le_bytes().to_vec()),
            // The queue index, then the ring's next index.
            GET_VRING_BASE => Some([&body[..4], &7u32.to_le_bytes()].concat()),
            _ if flags & NEED_REPLY != 0 => Some(0u64.to_le_bytes().to_vec()),
            _ => None,
        };
        if let Some(payload) = reply {
            let mut msg = Vec::new();
            for w in [code, 0x1 | 0x4, payload.len() as u32] {
                msg.extend_from_slice(&w.to_le_bytes());
            }
            msg.extend_from_slice(&payload);
            if theirs.write_all(&msg).is_err() {
                return;
            }
        }
    });
    (ours, log, thread)
}

/// Waits until the backend got `n` requests (those with no reply are
/// read by its thread after the frontend went on).
fn wait_for(log: &Log, n: usize) {
    let start = std::time::Instant::now();
    while log.lock().unwrap().len() < n {
        assert!(
            start.elapsed().as_secs() < 10,
            "backend got {:?}",
            codes(log)
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn codes(log: &Log) -> Vec<u32> {
    log.lock().unwrap().iter().map(|(c, _)| *c).collect()
}

fn payload_u64(log: &Log, code: u32) -> u64 {
    let log = log.lock().unwrap();
    let (_, body) = log.iter().find(|(c, _)| *c == code).unwrap();
    u64::from_le_bytes(body[..8].try_into().unwrap())
}

#[test]
fn tags_are_checked() {
    assert!(check_tag("husk").is_ok());
    assert!(check_tag(&"t".repeat(TAG_LEN)).is_ok());
    assert!(check_tag(&"t".repeat(TAG_LEN + 1)).is_err());
    assert!(check_tag("").is_err());
    assert_eq!(
        check_tag("a\0b").unwrap_err().to_string(),
        "virtio-fs tag \"a\\0b\" is invalid (1 to 36 bytes, no NUL)"
    );
}

#[test]
fn config_space_is_the_padded_tag_and_one_request_queue() {
    let c = config_space("husk");
    assert_eq!(&c[..4], b"husk");
    assert!(c[4..TAG_LEN].iter().all(|&b| b == 0));
    assert_eq!(&c[TAG_LEN..], &1u32.to_le_bytes());
    let full = config_space(&"x".repeat(TAG_LEN));
    assert!(full[..TAG_LEN].iter().all(|&b| b == b'x'));
}

#[test]
fn features_are_masked() {
    let backend = VERSION_1
        | EVENT_IDX
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | PROTOCOL_FEATURES
        | LOG_ALL
        | (1 << VIRTIO_F_ACCESS_PLATFORM)
        | (1 << 34); // VIRTIO_F_RING_PACKED
    assert_eq!(offered_features(backend).unwrap(), SUPPORTED_FEATURES);
    assert_eq!(offered_features(VERSION_1).unwrap(), VERSION_1);
    assert!(matches!(
        offered_features(EVENT_IDX | PROTOCOL_FEATURES),
        Err(FsError::NoVersion1(_))
    ));
    let all = VhostUserProtocolFeatures::all();
    assert_eq!(
        protocol_features_to_ack(all),
        VhostUserProtocolFeatures::REPLY_ACK
    );
    assert!(protocol_features_to_ack(VhostUserProtocolFeatures::MQ).is_empty());
}

#[test]
fn setup_reads_features_and_the_guest_reads_the_config() {
    let features = VERSION_1 | EVENT_IDX | PROTOCOL_FEATURES | LOG_ALL;
    let (sock, log, thread) = fake_backend(features, u64::MAX >> 1);
    let fs = Fs::new("husk", Arc::new(sock)).unwrap();
    assert_eq!(fs.avail_features(), VERSION_1 | EVENT_IDX);
    assert_eq!(fs.device_type(), 26);
    assert_eq!(fs.tag(), "husk");
    let mut data = [0xffu8; 8];
    fs.read_config(0, &mut data);
    assert_eq!(&data, b"husk\0\0\0\0");
    let mut data = [0xffu8; 4];
    fs.read_config(TAG_LEN as u64, &mut data);
    assert_eq!(u32::from_le_bytes(data), 1);
    fs.read_config(64, &mut data);
    assert_eq!(data, [0; 4]);
    wait_for(&log, 4);
    assert_eq!(
        codes(&log),
        [
            SET_OWNER,
            GET_FEATURES,
            GET_PROTOCOL_FEATURES,
            SET_PROTOCOL_FEATURES
        ]
    );
    // Only REPLY_ACK is acked.
    assert_eq!(payload_u64(&log, SET_PROTOCOL_FEATURES), 1 << 3);
    drop(fs);
    thread.join().unwrap();
}

#[test]
fn bad_tags_and_backends_without_version_1_are_refused() {
    let (sock, _log, _thread) = fake_backend(VERSION_1, 0);
    assert!(matches!(Fs::new("", Arc::new(sock)), Err(FsError::Tag(_))));
    let (sock, _log, _thread) = fake_backend(EVENT_IDX, 0);
    assert!(matches!(
        Fs::new("husk", Arc::new(sock)),
        Err(FsError::NoVersion1(_))
    ));
}

/// Activates `fs` with two queues in shared guest memory.
fn activate(fs: &mut Fs, mem: &crate::devices::virtio::GuestMemory) {
    let hiprio = Driver::new(mem, 0x10000, 128);
    let requests = Driver::new(mem, 0x20000, 1024);
    let (ctx, _kicks) = activate_context(mem, vec![hiprio.queue(), requests.queue()]);
    fs.common_mut()
        .features_mut()
        .write_driver(VERSION_1 | EVENT_IDX);
    fs.activate(ctx).unwrap();
}

#[test]
fn activation_starts_the_rings_and_reset_stops_them() {
    let features = VERSION_1 | EVENT_IDX | PROTOCOL_FEATURES;
    let (sock, log, thread) = fake_backend(features, VhostUserProtocolFeatures::all().bits());
    let mut fs = Fs::new("husk", Arc::new(sock)).unwrap();
    wait_for(&log, 4);
    let mem = crate::memory::create_shared_guest_memory(64).unwrap();
    activate(&mut fs, &mem);
    assert!(!fs.is_started(), "started on the event thread only");
    log.lock().unwrap().clear();
    fs.sync_backend();
    assert!(fs.is_started() && !fs.is_broken());
    let per_queue = [
        SET_VRING_NUM,
        SET_VRING_BASE,
        SET_VRING_ADDR,
        SET_VRING_CALL,
        SET_VRING_KICK,
    ];
    let mut expected = vec![SET_FEATURES, SET_MEM_TABLE];
    expected.extend(per_queue);
    expected.extend(per_queue);
    expected.extend([SET_VRING_ENABLE, SET_VRING_ENABLE]);
    assert_eq!(codes(&log), expected);
    assert_eq!(
        payload_u64(&log, SET_FEATURES),
        VERSION_1 | EVENT_IDX | PROTOCOL_FEATURES
    );
    // Nothing more while the activation is the same.
    fs.sync_backend();
    assert_eq!(codes(&log).len(), expected.len());

    log.lock().unwrap().clear();
    fs.reset();
    fs.sync_backend();
    assert!(!fs.is_started());
    assert_eq!(
        codes(&log),
        [
            SET_VRING_ENABLE,
            GET_VRING_BASE,
            SET_VRING_ENABLE,
            GET_VRING_BASE
        ]
    );

    // A reset and a new activation in between two passes: stop, start.
    activate(&mut fs, &mem);
    fs.sync_backend();
    log.lock().unwrap().clear();
    fs.reset();
    activate(&mut fs, &mem);
    fs.sync_backend();
    let c = codes(&log);
    assert_eq!(c[1], GET_VRING_BASE);
    assert_eq!(c[4], SET_FEATURES);
    assert!(fs.is_started());
    drop(fs);
    thread.join().unwrap();
}

#[test]
fn a_backend_that_went_away_breaks_the_device_without_panicking() {
    let (sock, log, thread) = fake_backend(VERSION_1 | PROTOCOL_FEATURES, 1 << 3);
    let sock = Arc::new(sock);
    let mut fs = Fs::new("husk", sock.clone()).unwrap();
    // The backend's end closes.
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    thread.join().unwrap();
    let mem = crate::memory::create_shared_guest_memory(64).unwrap();
    activate(&mut fs, &mem);
    fs.sync_backend();
    assert!(fs.is_broken() && !fs.is_started());
    // Nothing is sent any more; reset and drop are quiet.
    fs.reset();
    fs.sync_backend();
    drop(fs);
    assert_eq!(codes(&log).len(), 4);
}

#[test]
fn anonymous_guest_memory_is_refused_at_activation() {
    let (sock, _log, thread) = fake_backend(VERSION_1, 0);
    let mut fs = Fs::new("husk", Arc::new(sock)).unwrap();
    let mem = crate::memory::create_guest_memory(64).unwrap();
    activate(&mut fs, &mem);
    fs.sync_backend();
    assert!(!fs.is_started() && fs.is_broken());
    drop(fs);
    thread.join().unwrap();
}
