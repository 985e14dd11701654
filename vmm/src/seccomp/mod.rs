//! Per-thread seccomp filters: every thread of the VMM that handles what
//! the guest does runs under an allow-list of the system calls its kind of
//! work needs (see docs/SECURITY.md).
//!
//! - [`ThreadKind::Vcpu`]: a vCPU thread (`vcpu<N>`): KVM_RUN and the few
//!   vCPU ioctls it reads state with, the device transport registers
//!   (eventfd writes, duplicating queue eventfds), the serial console.
//! - [`ThreadKind::EventLoop`]: the device thread (`vm`, see
//!   [`Vm::run_until_paused_filtered`](crate::Vm::run_until_paused_filtered)):
//!   epoll, eventfds, timerfd, disk I/O, the network backend, vsock's Unix
//!   sockets, virtio-fs's vhost-user messages.
//! - [`ThreadKind::Control`]: the thread of the jailed VMM process that
//!   started the others and then only serves its caller (`husk-vmm`'s
//!   main thread): poll, the control socket's messages (with descriptors),
//!   joining the VM's thread and dropping the VM (unmapping its memory,
//!   closing its descriptors).
//!
//! Each VM compiles its filters once ([`Filters::new`], BPF through the
//! `seccompiler` crate) and each thread installs its own as it starts, after
//! its own setup ([`Filters::install`]): a filter applies to the calling
//! thread only (no TSYNC), so it works in whatever process runs the VMM,
//! and the threads that set the VM up or save it (the caller's) stay
//! unfiltered. Installing sets the thread's `no_new_privs` first (per
//! thread, as seccomp requires of an unprivileged caller), independent of
//! what the process itself did.
//!
//! Opening a file fails with `EACCES` (glibc's malloc tries once, see
//! `rules::DENIED_WITH_ERROR`): a second, tiny filter stacked under
//! each thread's allow-list returns that error, and the kernel takes the
//! stricter of the two answers.
//!
//! A system call outside the list kills the whole process
//! ([`SeccompMode::Enforce`], `SECCOMP_RET_KILL_PROCESS`), or is allowed
//! and logged by the kernel's audit log ([`SeccompMode::Log`],
//! `SECCOMP_RET_LOG`, for finding a missing call: `dmesg | grep
//! 'type=1326'`).

mod rules;

use std::cell::Cell;

use seccompiler::{BackendError, BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use serde::{Deserialize, Serialize};

/// What the filters do with a system call outside their allow-lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Kill the process (`SECCOMP_RET_KILL_PROCESS`). The default.
    #[default]
    Enforce,
    /// Allow it and log it to the kernel's audit log (`SECCOMP_RET_LOG`):
    /// for development, to find what a filter lacks. Opening a file still
    /// fails with `EACCES`.
    Log,
    /// Install no filter.
    Disabled,
}

/// The kinds of VMM threads, one filter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread: KVM_RUN and exit handling.
    Vcpu,
    /// The device event loop.
    EventLoop,
    /// The jailed VMM's main thread once the VM runs: the control socket.
    Control,
}

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The allow-list cannot be compiled (a bug in the rules).
    #[error("cannot build the seccomp filter of the {0:?} threads")]
    Build(ThreadKind, #[source] seccompiler::Error),
    /// The filter that refuses opening files cannot be compiled.
    #[error("cannot build the seccomp filter that refuses opening files")]
    BuildDenied(#[source] seccompiler::Error),
    /// The kernel refused the filter (or `no_new_privs`).
    #[error("cannot install the seccomp filter of a {0:?} thread")]
    Install(ThreadKind, #[source] seccompiler::Error),
    /// The thread already runs under the filter of another kind (whose
    /// allow-list has no `seccomp` call to add one).
    #[error("a thread filtered as {0:?} cannot also be filtered as {1:?}")]
    OtherKind(ThreadKind, ThreadKind),
}

/// The compiled filters of one VM's threads (none when disabled).
#[derive(Debug, Clone)]
pub struct Filters {
    mode: SeccompMode,
    vcpu: BpfProgram,
    event_loop: BpfProgram,
    control: BpfProgram,
    /// Makes [`rules::DENIED_WITH_ERROR`] fail with `EACCES`; installed
    /// before (under) each allow-list.
    denied: BpfProgram,
}

thread_local! {
    /// The filter of ours this thread runs under, if any.
    static FILTERED: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

impl Filters {
    /// Compiles the filters for `mode`.
    pub fn new(mode: SeccompMode) -> Result<Filters, SeccompError> {
        let (vcpu, event_loop, control, denied) = match mode {
            SeccompMode::Disabled => (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            _ => (
                compile(mode, ThreadKind::Vcpu)?,
                compile(mode, ThreadKind::EventLoop)?,
                compile(mode, ThreadKind::Control)?,
                compile_denied()?,
            ),
        };
        Ok(Filters {
            mode,
            vcpu,
            event_loop,
            control,
            denied,
        })
    }

    /// The mode the filters were built for.
    pub fn mode(&self) -> SeccompMode {
        self.mode
    }

    /// Installs the filter of `kind` on the calling thread, for the rest
    /// of its life (nothing when disabled, or if the thread already runs
    /// under it).
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let program = match kind {
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::EventLoop => &self.event_loop,
            ThreadKind::Control => &self.control,
        };
        if self.mode == SeccompMode::Disabled {
            return Ok(());
        }
        match FILTERED.with(|f| f.get()) {
            Some(current) if current == kind => return Ok(()),
            Some(current) => return Err(SeccompError::OtherKind(current, kind)),
            None => {}
        }
        // apply_filter sets this thread's no_new_privs, then installs the
        // filter on this thread only. The allow-list goes last: it has no
        // `seccomp` call, so nothing can be added after it.
        let install = |p: &BpfProgram| {
            seccompiler::apply_filter(p).map_err(|e| SeccompError::Install(kind, e))
        };
        install(&self.denied)?;
        install(program)?;
        FILTERED.with(|f| f.set(Some(kind)));
        Ok(())
    }
}

/// Whether the calling thread runs under one of the VMM's filters: code
/// shared with other threads (a logger) must then not open, rename or
/// remove files.
pub fn current_thread_filtered() -> bool {
    FILTERED.with(|f| f.get()).is_some()
}

/// Compiles the allow-list of `kind` for `mode` (not `Disabled`).
fn compile(mode: SeccompMode, kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    rules::allowed(kind)
        .and_then(|rules| to_bpf(rules, mismatch, SeccompAction::Allow))
        .map_err(|e| SeccompError::Build(kind, seccompiler::Error::Backend(e)))
}

/// The filter that fails [`rules::DENIED_WITH_ERROR`] with `EACCES` and
/// lets everything else through (to the allow-list installed over it).
fn compile_denied() -> Result<BpfProgram, SeccompError> {
    let rules = rules::DENIED_WITH_ERROR
        .iter()
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let denied = SeccompAction::Errno(libc::EACCES as u32);
    to_bpf(rules, SeccompAction::Allow, denied)
        .map_err(|e| SeccompError::BuildDenied(seccompiler::Error::Backend(e)))
}

/// BPF for this machine's architecture: `on_match` for the calls in
/// `rules` (whose conditions hold), `mismatch` for every other.
fn to_bpf(
    rules: rules::Rules,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, BackendError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    BpfProgram::try_from(SeccompFilter::new(rules, mismatch, on_match, arch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_compiles_and_disabled_installs_nothing() {
        for mode in [SeccompMode::Enforce, SeccompMode::Log] {
            let f = Filters::new(mode).unwrap();
            assert!(!f.vcpu.is_empty() && !f.event_loop.is_empty() && !f.control.is_empty());
            assert_ne!(f.vcpu, f.event_loop);
            assert_ne!(f.control, f.event_loop);
            assert_ne!(f.control, f.vcpu);
        }
        let off = Filters::new(SeccompMode::Disabled).unwrap();
        assert!(off.denied.is_empty());
        off.install(ThreadKind::Vcpu).unwrap();
        assert!(!current_thread_filtered());
    }

    #[test]
    fn the_mode_is_lowercase_in_configs() {
        let json = |m: SeccompMode| serde_json::to_string(&m).unwrap();
        assert_eq!(json(SeccompMode::Enforce), "\"enforce\"");
        assert_eq!(json(SeccompMode::Log), "\"log\"");
        assert_eq!(json(SeccompMode::Disabled), "\"disabled\"");
        assert_eq!(SeccompMode::default(), SeccompMode::Enforce);
    }
}
