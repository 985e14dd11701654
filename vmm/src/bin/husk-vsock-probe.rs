//! A guest program for the VMM's own tests (not part of husk's runtime):
//! `husk-vsock-probe <port> <disk>` connects to the host (CID 2) on vsock
//! port `<port>`, says `hello conn=<n>`, then answers each
//! `report <sectors>` line with what the guest sees of `/dev/<disk>`
//! (after waiting, bounded, until its size is `<sectors>`). When the
//! connection breaks (a snapshot restore resets the transport), it
//! connects again. It runs as the guest's PID 1, so it never exits.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Attempts at connecting before giving up on a connection.
const CONNECT_ATTEMPTS: u32 = 600;
/// How long a report waits for the disk to reach the expected size.
const SIZE_WAIT: Duration = Duration::from_secs(60);
const HOST_CID: u32 = 2;

fn vsock_connect(port: u32) -> std::io::Result<File> {
    // SAFETY: socket(2) has no memory arguments; the fd it returns is
    // owned by `sock` from here on.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is not owned elsewhere.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: HOST_CID,
        svm_zero: [0; 4],
    };
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes that outlives
    // the call.
    let rc = unsafe { libc::connect(sock.as_raw_fd(), (&raw const addr).cast(), len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(File::from(sock))
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// What the guest sees of `/dev/<disk>`, once its size is `sectors`.
fn report(disk: &str, sectors: &str) -> String {
    let size_path = format!("/sys/block/{disk}/size");
    let start = Instant::now();
    while read_trimmed(&size_path) != sectors && start.elapsed() < SIZE_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut head = [0u8; 32];
    let head = match File::open(format!("/dev/{disk}")).and_then(|mut f| f.read(&mut head)) {
        Ok(n) => {
            let end = head[..n].iter().position(|&b| b == 0).unwrap_or(n);
            String::from_utf8_lossy(&head[..end]).into_owned()
        }
        Err(e) => format!("<{e}>"),
    };
    format!(
        "report size={} serial={} head={head}\n",
        read_trimmed(&size_path),
        read_trimmed(&format!("/sys/block/{disk}/serial")),
    )
}

/// Serves one connection until it breaks.
fn serve(conn: File, n: u32, disk: &str) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    out.write_all(format!("hello conn={n}\n").as_bytes())?;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        if let Some(sectors) = line.strip_prefix("report ") {
            out.write_all(report(disk, sectors).as_bytes())?;
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(disk)) = (args.get(1).and_then(|p| p.parse().ok()), args.get(2)) else {
        eprintln!("usage: husk-vsock-probe <port> <disk>");
        loop {
            std::thread::park();
        }
    };
    for n in 1.. {
        let mut attempts = 0;
        let conn = loop {
            match vsock_connect(port) {
                Ok(c) => break Some(c),
                Err(e) if attempts >= CONNECT_ATTEMPTS => {
                    eprintln!("probe: connect: {e}");
                    break None;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            attempts += 1;
        };
        let Some(conn) = conn else { continue };
        let result = serve(conn, n, disk);
        eprintln!("probe: connection {n} ended: {result:?}");
    }
}
