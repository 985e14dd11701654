//! The VMM threads' seccomp filters, each case in a child process (this
//! test binary re-executed for one test, with [`CHILD`] naming the case):
//! a thread installs a filter, then makes system calls. What the filter
//! allows works; anything else kills the whole child with SIGSYS (or, in
//! log mode, is let through).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use vmm::seccomp::Filters;
use vmm::seccomp::SeccompMode::{self, Enforce, Log};
use vmm::seccomp::ThreadKind::{self, Control, EventLoop, Vcpu};

/// The environment variable that makes a test run its child case.
const CHILD: &str = "HUSK_SECCOMP_TEST_CHILD";

/// Printed by the child once its filter is installed.
const INSTALLED: &str = "filter installed";
/// Printed by the child after the call under test returned.
const SURVIVED: &str = "call returned";

/// Runs test `name` again in a child process as case `case`.
fn child(name: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .unwrap()
}

/// In the child (when [`CHILD`] names `name`): installs the filter of
/// `kind` in `mode` on a new thread, which then runs `call` and reports;
/// returns true. In the parent: returns false.
fn in_child(name: &str, mode: SeccompMode, kind: ThreadKind, call: fn() -> i64) -> bool {
    if std::env::var(CHILD).as_deref() != Ok(name) {
        return false;
    }
    let filters = Filters::new(mode).unwrap();
    std::thread::spawn(move || {
        filters.install(kind).unwrap();
        assert!(vmm::seccomp::current_thread_filtered());
        // Again: nothing to do (a second filter would need prctl and
        // seccomp, which no allow-list has); another kind: refused.
        filters.install(kind).unwrap();
        let other = match kind {
            Vcpu => EventLoop,
            EventLoop | Control => Vcpu,
        };
        assert!(filters.install(other).is_err());
        say(INSTALLED);
        let rc = call();
        say(&format!("{SURVIVED}: {rc}"));
    })
    .join()
    .unwrap();
    true
}

/// Writes a line to stdout (a plain `write`, which every filter allows).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Asserts that the child was killed by SIGSYS after installing its
/// filter and before its call returned.
fn assert_killed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "status {:?}; stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains(INSTALLED), "stdout:\n{stdout}");
    assert!(!stdout.contains(SURVIVED), "stdout:\n{stdout}");
}

/// Asserts that the child's call returned `rc` and the child exited 0.
fn assert_survived(out: &Output, rc: i64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}; stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("{SURVIVED}: {rc}")),
        "stdout:\n{stdout}"
    );
}

/// 0 if the file opened, else the errno.
fn open_file() -> i64 {
    std::fs::File::open("/proc/self/status")
        .map_or_else(|e| i64::from(e.raw_os_error().unwrap_or(-1)), |_| 0)
}

fn rename_file() -> i64 {
    i64::from(std::fs::rename("/nonexistent/husk-a", "/nonexistent/husk-b").is_ok())
}

/// What glibc's malloc does when a thread's arena first shrinks: it opens
/// /proc/sys/vm/overcommit_memory. Large buffers are freed in a thread
/// (whose arena is not the main one) until that happened, and the thread
/// is still alive: 1.
fn shrink_arena() -> i64 {
    for _ in 0..64 {
        let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 60 << 10]).collect();
        drop(v);
    }
    1
}

fn unix_socket() -> i64 {
    // SAFETY: socket(2) with constant arguments; the fd is closed at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by socket(2) and is ours.
        unsafe { libc::close(fd) };
    }
    i64::from(fd >= 0)
}

fn inet_socket() -> i64 {
    // SAFETY: socket(2) with constant arguments; the fd is leaked (the
    // call is expected to kill the process).
    i64::from(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })
}

fn terminal_ioctl() -> i64 {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into `ws`, which is valid.
    i64::from(unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) }.min(0))
}

fn exec_mapping() -> i64 {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing; never used (the call is expected to kill the process).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    i64::from(p != libc::MAP_FAILED)
}

fn allocate() -> i64 {
    // Large enough for glibc to use mmap, then freed with munmap.
    let v = vec![7u8; 8 << 20];
    i64::from(v.iter().map(|&b| u32::from(b)).sum::<u32>() == 7 * (8 << 20))
}

#[test]
fn a_vcpu_thread_allocates_and_writes() {
    let name = "a_vcpu_thread_allocates_and_writes";
    if !in_child(name, Enforce, Vcpu, allocate) {
        assert_survived(&child(name), 1);
    }
}

/// Opening a file fails with EACCES (glibc's malloc tries it and copes);
/// changing the file system kills the process.
#[test]
fn a_vcpu_thread_cannot_open_a_file() {
    let name = "a_vcpu_thread_cannot_open_a_file";
    if !in_child(name, Enforce, Vcpu, open_file) {
        assert_survived(&child(name), i64::from(libc::EACCES));
    }
}

#[test]
fn a_vcpu_thread_that_renames_a_file_kills_the_process() {
    let name = "a_vcpu_thread_that_renames_a_file_kills_the_process";
    if !in_child(name, Enforce, Vcpu, rename_file) {
        assert_killed(&child(name));
    }
}

/// The event loop frees large buffers (vsock frames): glibc then trims
/// the thread's arena, which opens a /proc file. Before opening failed
/// with an error instead, this killed `husk export`'s VM.
#[test]
fn the_event_loop_survives_glibc_trimming_its_arena() {
    let name = "the_event_loop_survives_glibc_trimming_its_arena";
    if !in_child(name, Enforce, EventLoop, shrink_arena) {
        assert_survived(&child(name), 1);
    }
}

#[test]
fn a_vcpu_thread_may_only_use_its_kvm_ioctls() {
    let name = "a_vcpu_thread_may_only_use_its_kvm_ioctls";
    if !in_child(name, Enforce, Vcpu, terminal_ioctl) {
        assert_killed(&child(name));
    }
}

#[test]
fn no_thread_may_map_executable_memory() {
    let name = "no_thread_may_map_executable_memory";
    if !in_child(name, Enforce, EventLoop, exec_mapping) {
        assert_killed(&child(name));
    }
}

#[test]
fn the_event_loop_opens_unix_sockets() {
    let name = "the_event_loop_opens_unix_sockets";
    if !in_child(name, Enforce, EventLoop, unix_socket) {
        assert_survived(&child(name), 1);
    }
}

#[test]
fn the_event_loop_opening_an_inet_socket_kills_the_process() {
    let name = "the_event_loop_opening_an_inet_socket_kills_the_process";
    if !in_child(name, Enforce, EventLoop, inet_socket) {
        assert_killed(&child(name));
    }
}

#[test]
fn in_log_mode_a_forbidden_call_goes_through() {
    let name = "in_log_mode_a_forbidden_call_goes_through";
    if !in_child(name, Log, Vcpu, rename_file) {
        assert_survived(&child(name), 0);
    }
}

/// The control socket's two ends, made before the filter is installed.
static CONTROL_PAIR: std::sync::OnceLock<(UnixStream, UnixStream)> = std::sync::OnceLock::new();

fn control_message() -> i64 {
    let (a, b) = CONTROL_PAIR.get().expect("made before the filter");
    let sent = rustix::net::sendmsg(
        a,
        &[std::io::IoSlice::new(b"stop")],
        &mut rustix::net::SendAncillaryBuffer::default(),
        rustix::net::SendFlags::empty(),
    );
    let mut fd = [rustix::event::PollFd::new(b, rustix::event::PollFlags::IN)];
    let ready = rustix::event::poll(&mut fd, None);
    let mut buf = [0u8; 8];
    let got = rustix::net::recvmsg(
        b,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut rustix::net::RecvAncillaryBuffer::default(),
        rustix::net::RecvFlags::empty(),
    );
    i64::from(sent.is_ok() && ready == Ok(1) && got.map(|r| r.bytes).ok() == Some(4))
}

#[test]
fn the_control_thread_polls_and_exchanges_messages() {
    let name = "the_control_thread_polls_and_exchanges_messages";
    CONTROL_PAIR.get_or_init(|| UnixStream::pair().unwrap());
    if !in_child(name, Enforce, Control, control_message) {
        assert_survived(&child(name), 1);
    }
}

#[test]
fn the_control_thread_cannot_open_a_file() {
    let name = "the_control_thread_cannot_open_a_file";
    if !in_child(name, Enforce, Control, open_file) {
        assert_survived(&child(name), i64::from(libc::EACCES));
    }
}

#[test]
fn the_control_thread_renaming_a_file_kills_the_process() {
    let name = "the_control_thread_renaming_a_file_kills_the_process";
    if !in_child(name, Enforce, Control, rename_file) {
        assert_killed(&child(name));
    }
}

/// A vhost-user socket's two ends, made before the filter is installed.
static VHOST_USER_PAIR: std::sync::OnceLock<(UnixStream, UnixStream)> = std::sync::OnceLock::new();

/// What the event loop does for virtio-fs: a message with a descriptor
/// attached (an eventfd, the memfd) and a reply, without `poll`.
fn vhost_user_message() -> i64 {
    use rustix::net::{
        RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags,
    };
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;
    let (a, b) = VHOST_USER_PAIR.get().expect("made before the filter");
    let fds = [a.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        a,
        &[std::io::IoSlice::new(b"kick")],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    );
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 8];
    let got = rustix::net::recvmsg(
        b,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut ancillary,
        RecvFlags::empty(),
    );
    let fds = ancillary
        .drain()
        .map(|m| match m {
            RecvAncillaryMessage::ScmRights(fds) => fds.count(),
            _ => 0,
        })
        .sum::<usize>();
    i64::from(sent.is_ok() && got.map(|r| r.bytes).ok() == Some(4) && fds == 1)
}

#[test]
fn the_event_loop_exchanges_vhost_user_messages_with_descriptors() {
    let name = "the_event_loop_exchanges_vhost_user_messages_with_descriptors";
    VHOST_USER_PAIR.get_or_init(|| UnixStream::pair().unwrap());
    if !in_child(name, Enforce, EventLoop, vhost_user_message) {
        assert_survived(&child(name), 1);
    }
}
