//! The `husk-vmm` process: receives its [`Launch`], builds the jail
//! around itself, builds and runs the VM, and reports over the control
//! socket (its stdin). Its stdout is the guest console, its stderr the
//! caller's log.
//!
//! Order (see the module [`crate::jail`]): join the cgroup; new pid
//! namespace and one fork (the forking parent drops its privileges and
//! only waits); new mount, ipc and uts namespaces with private mounts;
//! the VM is built while root; new network namespace; a tmpfs root with
//! only the agent socket, `pivot_root`; resource limits; no groups, the
//! jail's uid/gid, no capabilities in any set, `no_new_privs`; then the
//! VM's threads, each under its seccomp filter, and last the filter of the
//! main thread, which from then on only serves the control socket.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use super::proto::{
    self, FromVmm, JailSpec, Launch, NetBackendSpec, NetSpec, ToVmm, VmEnd, VmSpec,
};
use crate::explain::error_chain;
use crate::vmthread::VmThread;
use crate::wait::poll_readable;

/// Open files the VMM may have: its devices, up to 128 vsock connections
/// per port and pending clients, with room to spare.
const NOFILE: u64 = 4096;

/// Exit status when the jail or the VM could not be set up.
const FAILED: i32 = 125;

/// Why the VMM could not run the VM.
struct Failure {
    damaged: bool,
    message: String,
}

impl Failure {
    fn new(what: &str, e: impl std::error::Error) -> Failure {
        Failure {
            damaged: false,
            message: format!("{what}: {}", error_chain(&e)),
        }
    }
}

/// `husk-vmm`'s main: returns the process's exit status.
pub fn main() -> i32 {
    init_logging();
    // Its own session: the caller's terminal signals (^C) are the
    // caller's to handle; it stops the VM through the control socket.
    let _ = rustix::process::setsid();
    let control = match take_stdin() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("husk-vmm: {e} (run by husk, not by hand)");
            return FAILED;
        }
    };
    let (launch, fds) = match proto::recv::<Launch>(&control) {
        Ok(Some(l)) => l,
        Ok(None) => return FAILED,
        Err(e) => {
            eprintln!("husk-vmm: {}", error_chain(&e));
            return FAILED;
        }
    };
    if let Err(f) = join_cgroup(&launch.jail).and_then(|()| new_pid_namespace()) {
        report_failure(&control, f);
        return FAILED;
    }
    let mut fds = fds.into_iter();
    let listener = fds.next();
    let uid_lock = fds.next();
    // SAFETY: fork(2) in a process that has started no thread (this is the
    // start of husk-vmm's main); the child continues normally.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            report_failure(&control, Failure::new("fork", e));
            FAILED
        }
        0 => {
            // Only the waiter keeps the uid taken.
            drop(uid_lock);
            vmm_main(control, launch, listener.into_iter().chain(fds).collect())
        }
        pid => {
            let pid = pid.unsigned_abs();
            let _ = proto::send(control.as_fd(), &FromVmm::Pid(pid), &[]);
            drop(control);
            drop(listener);
            drop(fds.collect::<Vec<_>>());
            let code = wait_for(pid);
            remove_jail(&launch.jail);
            drop(uid_lock);
            code
        }
    }
}

/// The waiter: waits for the VMM (pid 1 of the new namespace) and returns
/// its exit status (128+N after signal N). It stays root, in the host's
/// namespaces, reads nothing from the guest or the VMM, and holds the jail
/// uid's lock until it has removed the jail: so the jail goes away, and its
/// uid stays taken until then, even when the caller was killed.
fn wait_for(pid: u32) -> i32 {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return FAILED;
    };
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return code;
                }
                if let Some(sig) = status.terminating_signal() {
                    return 128 + sig;
                }
            }
            Ok(None) => {}
            Err(_) => return FAILED,
        }
    }
}

/// Leaves the jail's cgroup and removes it and the root directory (the
/// VMM's mount namespace, and so its tmpfs, died with it).
fn remove_jail(jail: &JailSpec) {
    let me = std::process::id().to_string();
    for procs in &jail.cgroup_leave {
        let _ = std::fs::write(procs, &me);
    }
    for dir in &jail.cgroup_dirs {
        if let Err(e) = std::fs::remove_dir(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing cgroup {}: {e}", dir.display());
            }
        }
    }
    let _ = std::fs::remove_dir(&jail.root);
}

/// The VMM proper (pid 1 of its pid namespace).
fn vmm_main(control: OwnedFd, launch: Launch, fds: Vec<OwnedFd>) -> i32 {
    // If the waiter is killed, so is the VMM.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let template = matches!(launch.vm, VmSpec::Template(_));
    let vm = match build_jailed(launch, fds) {
        Ok(vm) => vm,
        Err(f) => {
            report_failure(&control, f);
            return FAILED;
        }
    };
    if proto::send(control.as_fd(), &FromVmm::Running, &[]).is_err() {
        return FAILED;
    }
    serve(&control, vm, template)
}

/// Builds the VM while still root, then locks the process in.
fn build_jailed(launch: Launch, fds: Vec<OwnedFd>) -> Result<vmm::Vm, Failure> {
    // SAFETY: the process is single-threaded, so no other thread can
    // observe the unshared state.
    unsafe {
        rustix::thread::unshare_unsafe(
            UnshareFlags::NEWNS | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS,
        )
    }
    .map_err(|e| Failure::new("unshare", std::io::Error::from(e)))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| Failure::new("making mounts private", std::io::Error::from(e)))?;
    let vm = build_vm(launch.vm, launch.net, fds)?;
    // SAFETY: as above.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
        .map_err(|e| Failure::new("unshare(CLONE_NEWNET)", std::io::Error::from(e)))?;
    let _ = rustix::system::sethostname(b"husk-vmm");
    enter_root(&launch.jail)?;
    set_limits(&launch.jail)?;
    drop_privileges(launch.jail.uid, launch.jail.gid)?;
    Ok(vm)
}

/// Builds the VM from `spec` with the passed descriptors: the vsock
/// listener first, then the network stream if the backend is one, then
/// the virtio-fs socket if the VM has a virtio-fs device.
fn build_vm(spec: VmSpec, net: Option<NetSpec>, fds: Vec<OwnedFd>) -> Result<vmm::Vm, Failure> {
    let mut fds = fds.into_iter();
    let listener = fds.next().map(|fd| Arc::new(UnixListener::from(fd)));
    let net = match net {
        None => None,
        Some(n) => Some(vmm::NetConfig {
            mac: n.mac,
            mtu: n.mtu,
            backend: match n.backend {
                NetBackendSpec::Unix(p) => vmm::NetBackend::Unix(p),
                NetBackendSpec::Tap(name) => vmm::NetBackend::Tap(name),
                NetBackendSpec::Stream => {
                    let fd = fds.next().ok_or_else(|| Failure {
                        damaged: false,
                        message: "no network socket was passed".into(),
                    })?;
                    vmm::NetBackend::Stream(Arc::new(UnixStream::from(fd)))
                }
            },
            egress: n.egress,
            rate_limit: n.rate_limit,
        }),
    };
    let with_listener = |v: Option<vmm::VsockConfig>| {
        v.map(|v| vmm::VsockConfig {
            listener: listener.clone(),
            ..v
        })
    };
    match spec {
        VmSpec::Boot(mut c) | VmSpec::Template(mut c) => {
            c.vsock = with_listener(c.vsock);
            c.net = net;
            if let Some(fs) = &mut c.fs {
                let fd = fds.next().ok_or_else(|| Failure {
                    damaged: false,
                    message: "no virtio-fs socket was passed".into(),
                })?;
                fs.socket = Some(Arc::new(UnixStream::from(fd)));
            }
            vmm::Vm::new(c).map_err(|e| Failure::new("creating the VM", e))
        }
        VmSpec::Restore(mut r) => {
            r.vsock = with_listener(r.vsock);
            r.net = net;
            vmm::Vm::restore(r).map_err(|e| Failure {
                damaged: crate::warm::is_damaged(&e),
                message: error_chain(&e),
            })
        }
    }
}

/// Mounts an empty tmpfs on the jail's root directory, binds the agent
/// socket into it, makes it the root (the old one detached) and
/// read-only.
fn enter_root(jail: &JailSpec) -> Result<(), Failure> {
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: rustix::io::Errno| Failure::new(&what, std::io::Error::from(e))
    };
    let root = &jail.root;
    let data = CString::new("mode=0755,size=64k").unwrap_or_default();
    rustix::mount::mount(
        "husk-vmm",
        root,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data.as_c_str(),
    )
    .map_err(fail("mounting the jail's root"))?;
    let target = root.join(
        jail.agent_target
            .strip_prefix("/")
            .unwrap_or(&jail.agent_target),
    );
    std::fs::File::create(&target).map_err(|e| Failure::new("creating the agent socket", e))?;
    rustix::mount::mount_bind(&jail.agent_socket, &target)
        .map_err(fail("binding the agent socket"))?;
    let old = root.join(".old");
    std::fs::create_dir(&old).map_err(|e| Failure::new("creating .old", e))?;
    rustix::process::pivot_root(root, &old).map_err(fail("pivot_root"))?;
    rustix::process::chdir("/").map_err(fail("chdir /"))?;
    rustix::mount::unmount("/.old", UnmountFlags::DETACH)
        .map_err(fail("detaching the old root"))?;
    std::fs::remove_dir("/.old").map_err(|e| Failure::new("removing .old", e))?;
    rustix::mount::mount_remount(
        "/",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"",
    )
    .map_err(fail("making the jail's root read-only"))
}

/// No core dumps (guest memory), bounded descriptors and tasks.
fn set_limits(jail: &JailSpec) -> Result<(), Failure> {
    let set = |res, n: u64| {
        rustix::process::setrlimit(
            res,
            Rlimit {
                current: Some(n),
                maximum: Some(n),
            },
        )
        .map_err(|e| Failure::new(&format!("setrlimit {res:?}"), std::io::Error::from(e)))
    };
    set(Resource::Core, 0)?;
    set(Resource::Nofile, NOFILE)?;
    set(Resource::Nproc, jail.nproc)
}

/// Leaves root for good: the bounding set emptied, no supplementary
/// groups, `gid`/`uid` as real, effective and saved ids, every capability
/// set empty, `no_new_privs`. Checked afterwards.
fn drop_privileges(uid: u32, gid: u32) -> Result<(), Failure> {
    let fail = |what: &'static str| {
        move |e: rustix::io::Errno| Failure::new(what, std::io::Error::from(e))
    };
    for cap in 0..64 {
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << cap,
        )) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(fail("dropping the bounding set")(e)),
        }
    }
    rustix::thread::clear_ambient_capability_set()
        .map_err(fail("clearing ambient capabilities"))?;
    rustix::thread::set_thread_groups(&[]).map_err(fail("setgroups"))?;
    let gid = rustix::process::Gid::from_raw(gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(fail("setresgid"))?;
    let uid = rustix::process::Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(fail("setresuid"))?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).map_err(fail("capset"))?;
    rustix::thread::set_no_new_privs(true).map_err(fail("no_new_privs"))?;
    let caps = rustix::thread::capabilities(None).map_err(fail("capget"))?;
    if rustix::process::getuid() != uid
        || rustix::process::geteuid() != uid
        || !caps.permitted.is_empty()
        || !caps.effective.is_empty()
    {
        return Err(Failure {
            damaged: false,
            message: "the privilege drop did not take".into(),
        });
    }
    Ok(())
}

/// How long the VM may take to pause (its vCPUs finish the exit they
/// handle).
const PAUSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the VM on its `vm` thread until it ends, stopping it when asked
/// or when the caller's end of the control socket closes; reports the end.
/// Once the VM's threads run, this thread filters itself too
/// ([`vmm::seccomp::ThreadKind::Control`]): every thread of the process
/// then runs under an allow-list. Not for a `template`: this thread then
/// saves the VM on [`ToVmm::SaveTemplate`] (the VM's threads are filtered).
fn serve(control: &OwnedFd, vm: vmm::Vm, template: bool) -> i32 {
    let started = match template {
        true => VmThread::start(vm).map_err(|e| format!("starting the VM thread: {e}")),
        false => start_filtered(vm),
    };
    let mut thread = match started {
        Ok(t) => t,
        Err(message) => {
            let end = VmEnd::Failed(message);
            let _ = proto::send(control.as_fd(), &FromVmm::Ended(end), &[]);
            return FAILED;
        }
    };
    let mut caller_gone = false;
    loop {
        let fds: Vec<_> = if caller_gone {
            vec![thread.done_fd()]
        } else {
            vec![thread.done_fd(), control.as_fd()]
        };
        let ready = match poll_readable(&fds, None) {
            Ok(r) => r,
            Err(_) => break,
        };
        if ready.contains(&0) {
            break;
        }
        if ready.contains(&1) {
            match proto::recv::<ToVmm>(control) {
                Ok(Some((ToVmm::Stop, _))) => thread.request_stop(),
                Ok(Some((ToVmm::Pause, _))) => {
                    let answer = thread.suspend(PAUSE_TIMEOUT).err().map(|e| e.to_string());
                    let _ = proto::send(control.as_fd(), &FromVmm::Answer(answer), &[]);
                }
                Ok(Some((ToVmm::Resume, _))) => {
                    let answer = thread.resume().err().map(|e| e.to_string());
                    let _ = proto::send(control.as_fd(), &FromVmm::Answer(answer), &[]);
                }
                Ok(Some((ToVmm::SaveTemplate, fds))) if template => {
                    return save_template(control, &mut thread, fds);
                }
                Ok(Some((ToVmm::SaveTemplate, _))) => {
                    let answer = Some("not a template VM".to_string());
                    let _ = proto::send(control.as_fd(), &FromVmm::Answer(answer), &[]);
                }
                Ok(None) | Err(_) => {
                    caller_gone = true;
                    thread.request_stop();
                }
            }
        }
    }
    let end = match thread.stop() {
        Some(Ok(vmm::ExitReason::PowerOff)) => VmEnd::PowerOff,
        Some(Ok(vmm::ExitReason::Reboot)) => VmEnd::Reboot,
        Some(Ok(_)) => VmEnd::Stopped,
        Some(Err(e)) => VmEnd::Failed(error_chain(e)),
        None => VmEnd::Failed("the VM did not stop in time".into()),
    };
    let _ = proto::send(control.as_fd(), &FromVmm::Ended(end), &[]);
    0
}

/// Pauses the template VM for good, saves it into the passed state and
/// memory files and reports: the answer, then the end.
fn save_template(control: &OwnedFd, thread: &mut VmThread, fds: Vec<OwnedFd>) -> i32 {
    let saved = match <[OwnedFd; 2]>::try_from(fds) {
        Ok([state, memory]) => thread
            .pause(PAUSE_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|vm| {
                vm.save_snapshot_to(state.into(), memory.into())
                    .map_err(|e| error_chain(&e))
            }),
        Err(_) => Err("the template's two files were not passed".to_string()),
    };
    let failed = saved.is_err();
    let _ = proto::send(control.as_fd(), &FromVmm::Answer(saved.err()), &[]);
    if failed {
        thread.stop();
    }
    let _ = proto::send(control.as_fd(), &FromVmm::Ended(VmEnd::Stopped), &[]);
    0
}

/// Starts the VM's threads, then filters the calling thread with the
/// control allow-list (stopping the VM if that fails).
fn start_filtered(vm: vmm::Vm) -> Result<VmThread, String> {
    let filters = vm.seccomp_filters();
    let mut thread = VmThread::start(vm).map_err(|e| format!("starting the VM thread: {e}"))?;
    if let Err(e) = filters.install(vmm::seccomp::ThreadKind::Control) {
        thread.stop();
        return Err(error_chain(&e));
    }
    Ok(thread)
}

/// Joins the jail's cgroup (before the fork: the VMM is born in it).
fn join_cgroup(jail: &JailSpec) -> Result<(), Failure> {
    let me = std::process::id().to_string();
    for procs in &jail.cgroup_procs {
        std::fs::write(procs, &me)
            .map_err(|e| Failure::new(&format!("joining {}", procs.display()), e))?;
    }
    Ok(())
}

fn new_pid_namespace() -> Result<(), Failure> {
    // SAFETY: single-threaded; NEWPID only affects future children.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }
        .map_err(|e| Failure::new("unshare(CLONE_NEWPID)", std::io::Error::from(e)))
}

fn report_failure(control: &OwnedFd, f: Failure) {
    let msg = FromVmm::Failed {
        damaged: f.damaged,
        message: f.message,
    };
    let _ = proto::send(control.as_fd(), &msg, &[]);
}

/// The control socket (stdin), with stdin itself pointed at /dev/null;
/// every other descriptor the caller leaked (not close-on-exec) is closed
/// first, so nothing of the caller's reaches the jail.
fn take_stdin() -> std::io::Result<OwnedFd> {
    // SAFETY: at the start of main no object of this process owns a
    // descriptor above 2; close_range(2) only closes descriptors.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let control = std::io::stdin().as_fd().try_clone_to_owned()?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(control)
}

/// Log lines on stderr (the caller's log): warnings, or everything with
/// `HUSK_DEBUG`.
fn init_logging() {
    vmm::logging::log_to_stderr(|| "husk-vmm".to_string(), || true);
}
