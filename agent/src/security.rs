//! A process's security settings ([`ProcessSecurity`]): resource limits,
//! the capability sets, supplementary groups and `no_new_privs`.
//!
//! [`plan`] checks what the host asked for and prepares it before `clone`;
//! the child then applies it with plain system calls, in this order:
//! resource limits (while it may still raise them), dropping bounding
//! capabilities (needs `CAP_SETPCAP`), supplementary groups and the user
//! switch (in `spawn.rs`, with `PR_SET_KEEPCAPS` first when a non-root user
//! keeps capabilities), the effective, permitted and inheritable sets
//! (`capset`), the ambient set, and `no_new_privs` last.
//!
//! Capability bits above the running kernel's last capability are
//! ignored, as runc does: `--privileged` asks for every capability the
//! host knows, and the guest kernel may know fewer.

use std::sync::OnceLock;

use husk_protocol::{Capabilities, Capability, ProcessSecurity, RlimitResource};
use rustix::process::{Resource, Rlimit};

/// Most supplementary groups a process may have (`NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65536;

/// prctl(2) reads its unused arguments as zero `unsigned long`s (some
/// options check them), so every argument is passed at that width.
const NONE: libc::c_ulong = 0;
/// `1` as a prctl(2) argument.
const ONE: libc::c_ulong = 1;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit halves.
const CAPSET_VERSION_3: u32 = 0x2008_0522;

/// Why the requested settings cannot be applied (a bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// A soft limit above its hard limit.
    #[error("resource limit {resource}: the soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard {
        /// `RLIMIT_...`.
        resource: String,
        /// The soft limit, as a number or `unlimited`.
        soft: String,
        /// The hard limit, as a number or `unlimited`.
        hard: String,
    },
    /// The same resource twice.
    #[error("resource limit {0} is given more than once")]
    DuplicateRlimit(String),
    /// More groups than the kernel accepts.
    #[error("more than {MAX_GROUPS} supplementary groups")]
    TooManyGroups,
    /// Effective capabilities that are not permitted.
    #[error("effective capabilities that are not permitted: {0}")]
    EffectiveNotPermitted(String),
    /// Ambient capabilities that are not both permitted and inheritable.
    #[error("ambient capabilities that are not both permitted and inheritable: {0}")]
    AmbientNotAllowed(String),
    /// Inheritable capabilities outside the bounding set.
    #[error("inheritable capabilities outside the bounding set: {0}")]
    InheritableNotBounded(String),
}

/// What the child applies, prepared before `clone`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The resource limits, in request order.
    pub rlimits: Vec<(RlimitResource, Rlimit)>,
    /// The capability sets; `None` when the agent cannot change them (it
    /// does not run as root: unit tests).
    pub caps: Option<CapPlan>,
    /// Set `no_new_privs`.
    pub no_new_privs: bool,
    /// The file mode creation mask, if the request sets one (checked by
    /// `spec::check_exec`).
    pub umask: Option<libc::mode_t>,
}

/// The capability sets, masked to the kernel's capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapPlan {
    /// The sets to end up with.
    pub sets: Capabilities,
    /// The kernel's last capability (`/proc/sys/kernel/cap_last_cap`).
    pub last_cap: u8,
    /// Set `PR_SET_KEEPCAPS` before switching to the user (a non-root
    /// user that keeps permitted capabilities).
    pub keep: bool,
}

/// Checks `sec` for a process of user `uid` and prepares it; `privileged`
/// says whether the agent may change capabilities (it runs as root).
pub fn plan(sec: &ProcessSecurity, uid: u32, privileged: bool) -> Result<Plan, SecurityError> {
    let mut rlimits: Vec<(RlimitResource, Rlimit)> = Vec::new();
    for r in &sec.rlimits {
        if rlimits.iter().any(|(seen, _)| *seen == r.resource) {
            return Err(SecurityError::DuplicateRlimit(r.resource.linux_name()));
        }
        if r.soft > r.hard {
            return Err(SecurityError::SoftAboveHard {
                resource: r.resource.linux_name(),
                soft: limit_text(r.soft),
                hard: limit_text(r.hard),
            });
        }
        let limit = Rlimit {
            current: finite(r.soft),
            maximum: finite(r.hard),
        };
        rlimits.push((r.resource, limit));
    }
    let caps = if privileged {
        Some(cap_plan(&requested_caps(sec, uid), uid, last_cap())?)
    } else {
        None
    };
    Ok(Plan {
        rlimits,
        caps,
        no_new_privs: sec.no_new_privileges,
        umask: sec.umask.map(|m| m & 0o777),
    })
}

/// The sets a process of `uid` gets: the requested ones, or Docker's
/// choice without a request (its default set for root; for another user
/// only the bounding set, so set-user-ID programs still work).
pub fn requested_caps(sec: &ProcessSecurity, uid: u32) -> Capabilities {
    match sec.capabilities {
        Some(caps) => caps,
        None if uid == 0 => Capabilities::docker_default(),
        None => Capabilities {
            bounding: Capabilities::docker_default_mask(),
            ..Capabilities::default()
        },
    }
}

/// Masks `caps` to the kernel's capabilities and checks the rules the
/// kernel enforces, so a violation is a clear error before `clone`.
pub fn cap_plan(caps: &Capabilities, uid: u32, last_cap: u8) -> Result<CapPlan, SecurityError> {
    let known = if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    };
    let sets = Capabilities {
        bounding: caps.bounding & known,
        effective: caps.effective & known,
        permitted: caps.permitted & known,
        inheritable: caps.inheritable & known,
        ambient: caps.ambient & known,
    };
    let outside = |set: u64, allowed: u64| set & !allowed;
    let extra = outside(sets.effective, sets.permitted);
    if extra != 0 {
        return Err(SecurityError::EffectiveNotPermitted(names(extra)));
    }
    let extra = outside(sets.ambient, sets.permitted & sets.inheritable);
    if extra != 0 {
        return Err(SecurityError::AmbientNotAllowed(names(extra)));
    }
    let extra = outside(sets.inheritable, sets.bounding);
    if extra != 0 {
        return Err(SecurityError::InheritableNotBounded(names(extra)));
    }
    Ok(CapPlan {
        sets,
        last_cap,
        keep: uid != 0 && sets.permitted != 0,
    })
}

/// The supplementary groups: the user's, then `extra` (`--group-add`),
/// each once.
pub fn groups(user: &[u32], extra: &[u32]) -> Result<Vec<u32>, SecurityError> {
    let mut all: Vec<u32> = Vec::with_capacity(user.len() + extra.len());
    for gid in user.iter().chain(extra) {
        if !all.contains(gid) {
            all.push(*gid);
        }
    }
    if all.len() > MAX_GROUPS {
        return Err(SecurityError::TooManyGroups);
    }
    Ok(all)
}

/// The running kernel's last capability, probed once with
/// `PR_CAPBSET_READ` (which fails with `EINVAL` past it); this needs no
/// /proc.
pub fn last_cap() -> u8 {
    static LAST: OnceLock<u8> = OnceLock::new();
    *LAST.get_or_init(|| {
        let mut last = 0;
        for cap in 0..64u8 {
            // SAFETY: PR_CAPBSET_READ only reads the calling thread's
            // bounding set; the arguments are integers.
            let known = unsafe {
                libc::prctl(
                    libc::PR_CAPBSET_READ,
                    libc::c_ulong::from(cap),
                    NONE,
                    NONE,
                    NONE,
                )
            };
            if known < 0 {
                break;
            }
            last = cap;
        }
        last
    })
}

/// `u64::MAX` means unlimited.
fn finite(limit: u64) -> Option<u64> {
    (limit != u64::MAX).then_some(limit)
}

/// A limit for messages.
pub fn limit_text(limit: u64) -> String {
    match finite(limit) {
        Some(n) => n.to_string(),
        None => "unlimited".into(),
    }
}

/// Capability names of `mask` (numbers for unknown bits).
pub fn names(mask: u64) -> String {
    (0..64u8)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| match Capability::new(bit) {
            Some(cap) => cap.name().to_string(),
            None => format!("capability {bit}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn resource(r: RlimitResource) -> Resource {
    match r {
        RlimitResource::RlimitAs => Resource::As,
        RlimitResource::RlimitCore => Resource::Core,
        RlimitResource::RlimitCpu => Resource::Cpu,
        RlimitResource::RlimitData => Resource::Data,
        RlimitResource::RlimitFsize => Resource::Fsize,
        RlimitResource::RlimitLocks => Resource::Locks,
        RlimitResource::RlimitMemlock => Resource::Memlock,
        RlimitResource::RlimitMsgqueue => Resource::Msgqueue,
        RlimitResource::RlimitNice => Resource::Nice,
        RlimitResource::RlimitNofile => Resource::Nofile,
        RlimitResource::RlimitNproc => Resource::Nproc,
        RlimitResource::RlimitRss => Resource::Rss,
        RlimitResource::RlimitRtprio => Resource::Rtprio,
        RlimitResource::RlimitRttime => Resource::Rttime,
        RlimitResource::RlimitSigpending => Resource::Sigpending,
        RlimitResource::RlimitStack => Resource::Stack,
    }
}

// ---- child side: plain system calls only (no allocation, no locks) ----

/// A failed step in the child: an argument that says which item failed
/// (a limit's index, a capability number) and the errno.
pub type ChildError = (u8, i32);

/// Sets the resource limits (in the spawned child).
pub fn set_rlimits(plan: &Plan) -> Result<(), ChildError> {
    for (i, (res, limit)) in plan.rlimits.iter().enumerate() {
        if let Err(e) = rustix::process::setrlimit(resource(*res), *limit) {
            return Err((u8::try_from(i).unwrap_or(u8::MAX), e.raw_os_error()));
        }
    }
    Ok(())
}

/// Drops from the bounding set every capability not in `caps`' (in the
/// spawned child, still privileged).
///
/// # Safety
/// Spawned child only (before its execve): changes the process's capabilities.
pub unsafe fn drop_bounding(caps: &CapPlan) -> Result<(), ChildError> {
    for cap in 0..=caps.last_cap {
        if caps.sets.bounding & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(cap),
                NONE,
                NONE,
                NONE,
            )
        };
        if rc != 0 {
            return Err((cap, errno()));
        }
    }
    Ok(())
}

/// Keeps the permitted set across the switch to a non-root user, when
/// the plan needs it (before `setuid`).
///
/// # Safety
/// Spawned child only (before its execve).
pub unsafe fn keep_caps(caps: &CapPlan) -> Result<(), i32> {
    if !caps.keep {
        return Ok(());
    }
    // SAFETY: PR_SET_KEEPCAPS takes integers; execve resets it.
    match unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, ONE, NONE, NONE, NONE) } {
        0 => Ok(()),
        _ => Err(errno()),
    }
}

/// The header of `capset(2)`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One 32-bit half of the sets of `capset(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective, permitted and inheritable sets (after the user
/// switch).
///
/// # Safety
/// Spawned child only (before its execve).
pub unsafe fn set_caps(caps: &CapPlan) -> Result<(), i32> {
    let s = &caps.sets;
    let half = |shift: u32| CapData {
        effective: (s.effective >> shift) as u32,
        permitted: (s.permitted >> shift) as u32,
        inheritable: (s.inheritable >> shift) as u32,
    };
    let mut header = CapHeader {
        version: CAPSET_VERSION_3,
        pid: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset reads a version-3 header and two data structs that
    // live on this stack frame for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Raises the ambient capabilities (after [`set_caps`]).
///
/// # Safety
/// Spawned child only (before its execve).
pub unsafe fn raise_ambient(caps: &CapPlan) -> Result<(), ChildError> {
    for cap in 0..=caps.last_cap {
        if caps.sets.ambient & (1 << cap) == 0 {
            continue;
        }
        let (op, raise) = (libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE);
        // SAFETY: PR_CAP_AMBIENT_RAISE takes integers.
        let rc = unsafe {
            libc::prctl(
                op,
                raise as libc::c_ulong,
                libc::c_ulong::from(cap),
                NONE,
                NONE,
            )
        };
        if rc != 0 {
            return Err((cap, errno()));
        }
    }
    Ok(())
}

/// Sets `no_new_privs` if the plan asks for it (the last step).
///
/// # Safety
/// Spawned child only (before its execve).
pub unsafe fn set_no_new_privs(plan: &Plan) -> Result<(), i32> {
    if !plan.no_new_privs {
        return Ok(());
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers.
    match unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, ONE, NONE, NONE, NONE) } {
        0 => Ok(()),
        _ => Err(errno()),
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
