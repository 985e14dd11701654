//! End-to-end networking tests with `husk vm run`: real KVM microVMs with a
//! virtio-net device, Debian's passt as the backend, busybox (and a tiny
//! static UDP echo built here with gcc) in the guest, and servers and
//! clients on the host's 127.0.0.1 only.
//!
//! VM tests are skipped (with a message) when `HUSK_KERNEL` is unset, and
//! everything is skipped when passt is not installed.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use husk_tests::net::{free_port, http_get, one_shot_server, passt_or_skip, wait_for_http};
use husk_tests::{
    busybox_rootfs, husk, kernel_or_skip, leftovers, mkfs_ext4, processes_in_group, run, vm_lock,
    Finished, Running,
};

/// Two VMs boot at once in one test; the 2-core CI hosts are often busy.
const VM_TIMEOUT: Duration = Duration::from_secs(480);
/// `--boot-timeout` for the VMs here (seconds).
const BOOT_TIMEOUT: &str = "400";
/// How long a guest may take to boot and start serving.
const SERVE_TIMEOUT: Duration = Duration::from_secs(420);

/// A busybox root image with /www/index.html = `page`, and /bin/udp-echo
/// when gcc can build it statically (returns whether it could).
fn rootfs(work: &Path, image: &Path, page: &str) -> bool {
    busybox_rootfs(work, image).unwrap();
    let root = work.join("rootfs");
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), page).unwrap();
    let src = work.join("udp-echo.c");
    std::fs::write(&src, UDP_ECHO_C).unwrap();
    let udp = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(root.join("bin/udp-echo"))
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    mkfs_ext4(&root, image).unwrap();
    udp
}

const UDP_ECHO_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    char buf[2048];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n > 0) sendto(s, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}
"#;

/// The `(proto, port)` pairs passt of husk's process group listens on.
fn passt_listening(husk_pid: u32) -> Vec<(&'static str, u16)> {
    let passt = processes_in_group(husk_pid).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("passt"))
    });
    let Some(passt) = passt else {
        return Vec::new();
    };
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{passt}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(
                        l.strip_prefix("socket:[")?
                            .trim_end_matches(']')
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (file, proto, state) in [
        ("/proc/net/tcp", "tcp", "0A"),
        ("/proc/net/udp", "udp", "07"),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == state && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit_once(':').map(|(_, p)| p).unwrap_or("0");
                out.push((proto, u16::from_str_radix(port, 16).unwrap_or(0)));
            }
        }
    }
    out.sort();
    out
}

fn assert_clean(done: &Finished, run_dir: &Path) {
    assert_eq!(
        processes_in_group(done.pid),
        Vec::<u32>::new(),
        "leaked processes (passt?)"
    );
    assert_eq!(leftovers(run_dir), Vec::<String>::new(), "leaked run files");
}

struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

#[test]
fn outbound_tcp_reaches_a_host_loopback_server() {
    let test = "outbound_tcp_reaches_a_host_loopback_server";
    if kernel_or_skip(test).is_none() || !passt_or_skip(test) {
        return;
    }
    let _lock = vm_lock();
    let s = Scratch::new();
    let image = s.tmp.path().join("root.ext4");
    rootfs(&s.dir("build"), &image, "unused");
    // A one-shot HTTP server on the host's loopback, reachable only with
    // the opt-in (`husk vm run` writes no /etc/hosts into a disk root, so
    // the guest uses the address host.docker.internal would name).
    let (port, served) = one_shot_server("hello from the host\n", SERVE_TIMEOUT);
    let run_dir = s.dir("run");
    let script = format!("wget -qO- http://10.0.2.2:{port}/ && ip -4 addr show && ip route");
    let done = run(
        husk(
            &run_dir,
            &[
                "vm",
                "run",
                "--boot-timeout",
                BOOT_TIMEOUT,
                "--network",
                "passt",
                "--add-host",
                "host.docker.internal:host-gateway",
                "--disk",
                image.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &script,
            ],
        ),
        VM_TIMEOUT,
    )
    .unwrap();
    eprintln!("stdout: {}\nstderr: {}", done.stdout, done.stderr);
    assert_eq!(done.code(), 0);
    assert!(done.stdout.starts_with("hello from the host\n"));
    assert!(done.stdout.contains("inet 10.0.2.15/24"), "address");
    assert!(done.stdout.contains("default via 10.0.2.2"), "route");
    assert!(done.stdout.contains("65520"), "mtu");
    let served = served
        .join()
        .unwrap()
        .expect("the guest's request reached the host");
    assert!(served.peer.ip().is_loopback());
    assert!(
        served.request_line.starts_with("GET / HTTP/1."),
        "{}",
        served.request_line
    );
    assert_clean(&done, &run_dir);
}

#[test]
fn host_loopback_is_unreachable_without_the_opt_in() {
    let test = "host_loopback_is_unreachable_without_the_opt_in";
    if kernel_or_skip(test).is_none() || !passt_or_skip(test) {
        return;
    }
    let _lock = vm_lock();
    let s = Scratch::new();
    let image = s.tmp.path().join("root.ext4");
    rootfs(&s.dir("build"), &image, "unused");
    // A server on the host's loopback that must see no connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let run_dir = s.dir("run");
    // The gateway is passt's alias of the host's loopback. The attempt is
    // bounded; the device answers the SYN with a reset, so it fails at
    // once instead of timing out.
    let script = format!(
        "t0=$(date +%s); \\
         timeout 20 wget -qO- -T 15 http://10.0.2.2:{port}/ || echo refused; \\
         t1=$(date +%s); echo \"elapsed $((t1 - t0))\""
    );
    let done = run(
        husk(
            &run_dir,
            &[
                "vm",
                "run",
                "--boot-timeout",
                BOOT_TIMEOUT,
                "--network",
                "passt",
                "--disk",
                image.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &script,
            ],
        ),
        VM_TIMEOUT,
    )
    .unwrap();
    eprintln!("stdout: {}\nstderr: {}", done.stdout, done.stderr);
    assert_eq!(done.code(), 0);
    assert!(
        done.stdout.contains("refused"),
        "the guest reached the host"
    );
    let elapsed: u64 = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("elapsed "))
        .and_then(|n| n.trim().parse().ok())
        .expect("elapsed time");
    assert!(
        elapsed < 10,
        "refused at once, not after a timeout: {elapsed} s"
    );
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host's loopback server saw a connection: {other:?}"),
    }
    assert_clean(&done, &run_dir);
}

#[test]
fn published_tcp_and_udp_ports_two_vms_at_once() {
    let test = "published_tcp_and_udp_ports_two_vms_at_once";
    if kernel_or_skip(test).is_none() || !passt_or_skip(test) {
        return;
    }
    let _lock = vm_lock();
    let s = Scratch::new();
    let (image_a, image_b) = (s.tmp.path().join("a.ext4"), s.tmp.path().join("b.ext4"));
    let udp = rootfs(&s.dir("build-a"), &image_a, "vm a\n");
    rootfs(&s.dir("build-b"), &image_b, "vm b\n");
    if !udp {
        husk_tests::skip(
            &format!("{test} (its UDP echo part)"),
            "gcc -static failed (apt install build-essential)",
        );
    }
    let (tcp_a, udp_a, tcp_b) = (free_port(), free_port(), free_port());
    let (run_a, run_b) = (s.dir("run-a"), s.dir("run-b"));
    let pa = format!("127.0.0.1:{tcp_a}:80");
    let pu = format!("127.0.0.1:{udp_a}:7/udp");
    let script_a = if udp {
        "udp-echo 7 & exec httpd -f -p 80 -h /www"
    } else {
        "exec httpd -f -p 80 -h /www"
    };
    let mut args_a = vec!["vm", "run", "--boot-timeout", BOOT_TIMEOUT, "-p", &pa];
    if udp {
        args_a.extend(["-p", &pu]);
    }
    let root_a = format!("{}", image_a.display());
    args_a.extend(["--disk", &root_a, "--", "sh", "-c", script_a]);
    let a = Running::start(husk(&run_a, &args_a)).unwrap();
    // B: port 80 published, port 81 served but not published.
    let pb = format!("127.0.0.1:{tcp_b}:80");
    let root_b = format!("{}", image_b.display());
    let b = Running::start(husk(
        &run_b,
        &[
            "vm",
            "run",
            "--boot-timeout",
            BOOT_TIMEOUT,
            "-p",
            &pb,
            "--disk",
            &root_b,
            "--",
            "sh",
            "-c",
            "httpd -p 81 -h /www; exec httpd -f -p 80 -h /www",
        ],
    ))
    .unwrap();

    let body_a = wait_for_http(tcp_a, SERVE_TIMEOUT);
    let body_b = wait_for_http(tcp_b, SERVE_TIMEOUT);
    let mut echoed = None;
    if udp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..10 {
            let msg = format!("ping {i}");
            sock.send_to(msg.as_bytes(), ("127.0.0.1", udp_a)).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                echoed = Some((msg, String::from_utf8_lossy(&buf[..n]).into_owned()));
                break;
            }
        }
    }
    let listening_a = passt_listening(a.pid());
    let listening_b = passt_listening(b.pid());
    a.signal(Signal::TERM);
    b.signal(Signal::TERM);
    let done_a = a.finish(VM_TIMEOUT).unwrap();
    let done_b = b.finish(VM_TIMEOUT).unwrap();
    eprintln!(
        "A: {:?} {}\nB: {:?} {}",
        done_a.status, done_a.stderr, done_b.status, done_b.stderr
    );

    assert_eq!(body_a.as_deref(), Some("vm a\n"));
    assert_eq!(body_b.as_deref(), Some("vm b\n"));
    if udp {
        let (sent, got) = echoed.expect("UDP echo answered");
        assert_eq!(sent, got);
        assert_eq!(listening_a, vec![("tcp", tcp_a), ("udp", udp_a)]);
    } else {
        assert_eq!(listening_a, vec![("tcp", tcp_a)]);
    }
    // Only the published port is reachable: nothing listens for port 81.
    assert_eq!(listening_b, vec![("tcp", tcp_b)]);
    assert_eq!(done_a.code(), 128 + Signal::TERM.as_raw());
    assert_clean(&done_a, &run_a);
    assert_clean(&done_b, &run_b);
    assert!(http_get(tcp_a).is_none(), "port closed after the VM ended");
}

#[test]
fn port_in_use_fails_with_125_and_starts_nothing() {
    let test = "port_in_use_fails_with_125_and_starts_nothing";
    if kernel_or_skip(test).is_none() || !passt_or_skip(test) {
        return;
    }
    let s = Scratch::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let run_dir = s.dir("run");
    let spec = format!("127.0.0.1:{port}:80");
    let done = run(
        husk(&run_dir, &["vm", "run", "-p", &spec, "--", "true"]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(done.code(), 125);
    assert_eq!(
        done.stderr.trim(),
        format!("husk: host port 127.0.0.1:{port}/tcp is already in use")
    );
    assert_clean(&done, &run_dir);
}

#[test]
fn missing_passt_names_the_package() {
    let test = "missing_passt_names_the_package";
    if kernel_or_skip(test).is_none() {
        return;
    }
    let s = Scratch::new();
    let run_dir = s.dir("run");
    let mut cmd = husk(&run_dir, &["vm", "run", "-p", "8080:80", "--", "true"]);
    cmd.env("HUSK_PASST", "/nonexistent/passt");
    let done = run(cmd, Duration::from_secs(30)).unwrap();
    assert_eq!(done.code(), 125);
    assert_eq!(
        done.stderr.trim(),
        "husk: passt not found: apt-get install passt"
    );
    assert_clean(&done, &run_dir);
}
