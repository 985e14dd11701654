//! The allow-lists: which system calls (and, where cheap to check, which
//! arguments) each kind of VMM thread may use.
//!
//! Found by running VMs through every path (cold boot, restore from a
//! template, disks, passt and TAP networking, vsock in both directions,
//! exec, stop, pause, OOM) in [`SeccompMode::Log`](super::SeccompMode::Log)
//! and reading the kernel's audit log; the end-to-end tests run with
//! [`SeccompMode::Enforce`](super::SeccompMode::Enforce), so a missing call
//! kills their VM.

use std::collections::BTreeMap;

use kvm_bindings::{kvm_regs, kvm_sregs, KVMIO};
use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ThreadKind;

vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);

/// A syscall with the rules under which it is allowed (none: always).
pub(super) type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// What every VMM thread does: allocate (glibc malloc: brk, mmap,
/// mremap, madvise, and `sched_getaffinity` when it sizes its arenas;
/// never executable memory), wait on locks, sleep, read
/// the clock, run and leave signal handlers (the vCPU kick), log to
/// stderr (`write`, the logger's `fstat`), draw hash seeds (`getrandom`),
/// end the thread (freeing its signal stack) and abort on a double panic.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_sched_getaffinity,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_write,
    libc::SYS_fstat,
    libc::SYS_getrandom,
    libc::SYS_close,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
];

/// Calls glibc makes on its own that the VMM's threads must not make:
/// opening files. Its malloc opens `/proc/sys/vm/overcommit_memory` the
/// first time a thread's arena shrinks (after a large buffer is freed),
/// and copes when that fails. These fail with `EACCES` (a second, stacked
/// filter, see [`super::Filters::install`]) instead of killing the VMM;
/// the allow-lists let them through to that filter.
pub(super) const DENIED_WITH_ERROR: &[i64] = &[libc::SYS_open, libc::SYS_openat];

/// vCPU threads, besides [`COMMON`] and their ioctls: the serial console
/// file (positioned writes, truncation when it is rotated, see
/// [`crate::logging::CappedFile`]), draining queue eventfds when the
/// driver resets a device (`read`), duplicating them when it activates
/// one (`fcntl(F_DUPFD_CLOEXEC)`).
const VCPU: &[i64] = &[
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_ftruncate,
];

/// The event loop, besides [`COMMON`]: epoll, eventfds and the vsock
/// accept back-off timerfd, disk I/O, the network backend (a Unix stream
/// or a TAP file), vsock's Unix sockets (accepting host clients,
/// connecting to `<uds>_<port>` for guest-initiated connections, see
/// [`socket_rules`]), the virtio-fs device's vhost-user messages
/// (`sendmsg`/`recvmsg`, with the memfd and eventfds attached), and
/// kicking vCPU threads while it stops them.
const EVENT_LOOP: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_timerfd_settime,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
];

/// The jailed VMM's main thread, besides [`COMMON`]: waiting on the
/// control socket and the VM thread's "done" socket (`poll`/`ppoll`),
/// the control socket's messages (`sendmsg`/`recvmsg`, descriptors
/// included). Dropping the VM (unmapping memory, closing descriptors) is
/// in [`COMMON`]; it also tries to remove the vsock socket, which the
/// jail's read-only root refuses anyway (`unlink`).
const CONTROL: &[i64] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];

/// The allow-list of `kind`.
pub(super) fn allowed(kind: ThreadKind) -> Result<Rules, BackendError> {
    let mut rules: Rules = COMMON.iter().map(|&nr| (nr, Vec::new())).collect();
    let own = match kind {
        ThreadKind::Vcpu => VCPU,
        ThreadKind::EventLoop => EVENT_LOOP,
        ThreadKind::Control => CONTROL,
    };
    rules.extend(own.iter().map(|&nr| (nr, Vec::new())));
    rules.extend(DENIED_WITH_ERROR.iter().map(|&nr| (nr, Vec::new())));
    rules.insert(libc::SYS_mmap, no_exec(2)?);
    rules.insert(libc::SYS_mprotect, no_exec(2)?);
    rules.insert(libc::SYS_tgkill, arg_in(2, &kill_signals())?);
    match kind {
        ThreadKind::Vcpu => {
            let ioctls = [KVM_RUN(), KVM_GET_REGS(), KVM_GET_SREGS()];
            rules.insert(libc::SYS_ioctl, arg_in(1, &ioctls.map(u64::from))?);
            rules.insert(libc::SYS_fcntl, arg_in(1, &[libc::F_DUPFD_CLOEXEC as u64])?);
        }
        ThreadKind::EventLoop => {
            // std's set_nonblocking on a socket (accepted vsock clients).
            rules.insert(libc::SYS_ioctl, arg_in(1, &[libc::FIONBIO])?);
            let fcntl = [libc::F_GETFL, libc::F_SETFL, libc::F_GETFD, libc::F_SETFD];
            rules.insert(libc::SYS_fcntl, arg_in(1, &fcntl.map(|c| c as u64))?);
            rules.insert(libc::SYS_socket, socket_rules()?);
        }
        ThreadKind::Control => {}
    }
    Ok(rules)
}

/// The signals a VMM thread may send with `tgkill`: the vCPU kick, and
/// `SIGABRT` (a double panic aborts the process).
fn kill_signals() -> [u64; 2] {
    [crate::vcpu::kick_signal() as u64, libc::SIGABRT as u64]
}

/// `socket(AF_UNIX, SOCK_STREAM | flags, 0)` only: vsock's host side.
fn socket_rules() -> Result<Vec<SeccompRule>, BackendError> {
    let flags = (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
    Ok(vec![SeccompRule::new(vec![
        cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?,
        cond(1, SeccompCmpOp::MaskedEq(!flags), libc::SOCK_STREAM as u64)?,
    ])?])
}

/// Argument `index` has no `PROT_EXEC` bit.
fn no_exec(index: u8) -> Result<Vec<SeccompRule>, BackendError> {
    let exec = libc::PROT_EXEC as u64;
    Ok(vec![SeccompRule::new(vec![cond(
        index,
        SeccompCmpOp::MaskedEq(exec),
        0,
    )?])?])
}

/// Argument `index` is one of `values`.
fn arg_in(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, BackendError> {
    values
        .iter()
        .map(|&v| SeccompRule::new(vec![cond(index, SeccompCmpOp::Eq, v)?]))
        .collect()
}

fn cond(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
}
