//! The VM: assembly from a [`VmConfig`], the event loop and shutdown.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use crate::arch::x86_64::boot::{self, BootError};
use crate::arch::x86_64::cpuid::supported_cpuid;
use crate::arch::x86_64::mptable::{setup_mptable, MpTableError};
use crate::arch::x86_64::regs::write_boot_tables;
use crate::bus::Bus;
use crate::cmdline::{build_cmdline, CmdlineError};
use crate::config::{ConfigError, VmConfig};
use crate::exit::{ExitReason, ExitSignal};
use crate::host::HostKind;
use crate::memory::{self, MemoryError};
use crate::seccomp::{Filters, SeccompError, ThreadKind};
use crate::setup::{self, AttachedDevice, LegacyDevices, SetupError, Subscriber};
use crate::vcpu::{self, Vcpu, VcpuBootInfo, VcpuError};

/// Everything that can go wrong creating or running a VM. Each message is
/// one line; the error chain (`source()`) carries the OS-level cause.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// KVM, VM creation, device creation (disks, vsock, net, fs) or wiring.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initramfs or boot data.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Kernel command line.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// MP table.
    #[error(transparent)]
    MpTable(#[from] MpTableError),
    /// vCPU setup or a vCPU that stopped the VM.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The event loop failed.
    #[error("event loop failure")]
    EventLoop(#[source] event_manager::Error),
    /// Creating the exit eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The VM already ended (only a paused VM runs again).
    #[error("the VM has ended and cannot run again")]
    Ended,
    /// A vCPU thread panicked while the VM was being paused.
    #[error("a vCPU thread panicked")]
    VcpuPanicked,
    /// The threads' seccomp filters cannot be built or installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// Asks a running (or about to run) VM to stop. Cheap to clone and send.
#[derive(Clone)]
pub struct StopHandle {
    exit: Arc<ExitSignal>,
}

impl StopHandle {
    /// Makes [`Vm::run`] return [`ExitReason::Stopped`] soon, unless the VM
    /// already exited for another reason.
    pub fn stop(&self) {
        self.exit.request(ExitReason::Stopped);
    }

    /// Pauses the VM: every vCPU thread is kicked out of KVM_RUN (signal
    /// plus `immediate_exit`), finishes the exit it was handling and hands
    /// its vCPU back; [`Vm::run_until_paused`] then returns
    /// [`ExitReason::Paused`]. Like [`stop`](Self::stop), an earlier exit
    /// request wins; a stop requested after the pause but before
    /// `run_until_paused` returned is forgotten with it.
    pub fn pause(&self) {
        self.exit.request(ExitReason::Paused);
    }

    /// Freezes the running VM in place (`husk pause`): every vCPU leaves
    /// the guest and waits, the threads and devices stay; true once all
    /// are parked within `timeout`. Unlike [`pause`](Self::pause), the VM
    /// is not handed back: [`thaw`](Self::thaw) lets it run on, a stop
    /// ends it as usual. No thread is created or ended, so it works under
    /// every thread's seccomp filter.
    pub fn freeze(&self, timeout: std::time::Duration) -> bool {
        self.exit.freeze(timeout)
    }

    /// Lets a frozen VM run again.
    pub fn thaw(&self) {
        self.exit.thaw();
    }
}

/// A fully assembled VM, ready to [`run`](Vm::run).
pub struct Vm {
    /// The vCPUs while they are not running (empty once the VM ended).
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) pio: Arc<Bus>,
    pub(crate) mmio: Arc<Bus>,
    pub(crate) legacy: LegacyDevices,
    /// The virtio devices, in slot order.
    pub(crate) devices: Vec<AttachedDevice>,
    /// The device event loop, kept across pauses so that every
    /// registration (queue eventfds, sockets) stays valid when the VM runs
    /// again.
    pub(crate) event_manager: Option<EventManager<Subscriber>>,
    pub(crate) exit: Arc<ExitSignal>,
    pub(crate) mem_mib: u32,
    /// The compiled filters every run's threads install.
    pub(crate) seccomp: Arc<Filters>,
    // Dropped last, after the vCPU threads are joined: the VM (whose irqfds
    // and ioeventfds reference the devices' eventfds) and its memory.
    pub(crate) vm: VmFd,
    pub(crate) kvm: Kvm,
    pub(crate) memory: GuestMemoryMmap,
}

impl Vm {
    /// Validates `config`, creates the VM, loads the kernel (and initramfs),
    /// creates the devices and configures the vCPUs. Nothing runs yet.
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        config.validate()?;
        let seccomp = Arc::new(Filters::new(config.seccomp)?);
        let kvm = setup::open_kvm()?;
        // Check the kernel before allocating anything large.
        boot::open_kernel(&config.kernel)?;
        let vm = setup::create_vm(&kvm)?;
        // A vhost-user backend maps guest RAM too: it must be a shared file.
        let mem = match config.fs {
            Some(_) => memory::create_shared_guest_memory(config.mem_mib)?,
            None => memory::create_guest_memory(config.mem_mib)?,
        };
        memory::register_memory(&vm, &mem)?;

        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(
                &mem,
                path,
                kernel.end,
                memory::low_memory_end(&mem),
            )?),
            None => None,
        };

        let exit = Arc::new(ExitSignal::new().map_err(VmError::EventFd)?);
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let legacy = setup::attach_legacy(&vm, &mut pio, &config.console, &exit, None)?;

        let (devices, slots) = setup::attach_virtio_devices(
            &vm,
            &mut mmio,
            &mem,
            &config.disks,
            config.vsock.as_ref(),
            config.net.as_ref(),
            config.fs.as_ref(),
        )?;

        let host = HostKind::detect();
        let cmdline = build_cmdline(host, &slots, &config.cmdline_extra)?;
        log::info!("host KVM: {host:?}; kernel command line: {cmdline}");
        boot::write_boot_params(&mem, &cmdline, initrd)?;
        setup_mptable(&mem, config.vcpus)?;
        write_boot_tables(&mem).map_err(VcpuError::from)?;

        let cpuid = supported_cpuid(&kvm).map_err(VcpuError::from)?;
        let info = VcpuBootInfo {
            cpuid: &cpuid,
            vcpus: config.vcpus,
            entry: kernel.entry,
            host,
        };
        let vcpus = (0..config.vcpus)
            .map(|id| Vcpu::new(&vm, id, &info))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Vm {
            vcpus,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            legacy,
            devices,
            event_manager: None,
            exit,
            mem_mib: config.mem_mib,
            seccomp,
            vm,
            kvm,
            memory: mem,
        })
    }

    /// A handle that stops this VM from any thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            exit: self.exit.clone(),
        }
    }

    /// Boots the guest and runs the device event loop on the calling thread
    /// until the guest powers off or reboots, a [`StopHandle`] stops (or
    /// pauses) it, or a vCPU fails. All vCPU threads are joined before it
    /// returns.
    pub fn run(mut self) -> Result<ExitReason, VmError> {
        self.run_until_paused()
    }

    /// Like [`run`](Vm::run), but keeps the VM: after
    /// [`ExitReason::Paused`] its vCPUs are out of KVM_RUN with their state
    /// consistent, ready for [`save_snapshot`](Vm::save_snapshot) or for
    /// another call that resumes the guest. After any other exit the VM
    /// has ended and a further call fails with [`VmError::Ended`].
    pub fn run_until_paused(&mut self) -> Result<ExitReason, VmError> {
        self.run_inner(false)
    }

    /// The seccomp filters this VM's threads install, for a thread of the
    /// caller's that serves the running VM ([`ThreadKind::Control`]).
    pub fn seccomp_filters(&self) -> Arc<Filters> {
        self.seccomp.clone()
    }

    /// Like [`run_until_paused`](Vm::run_until_paused), and installs the
    /// event loop's seccomp filter on the calling thread once the loop is
    /// set up and the vCPU threads are started (see [`crate::seccomp`]).
    /// The thread stays filtered for the rest of its life: call this only
    /// on a thread dedicated to the VM, and drop or save the VM on
    /// another.
    pub fn run_until_paused_filtered(&mut self) -> Result<ExitReason, VmError> {
        self.run_inner(true)
    }

    fn run_inner(&mut self, filter_this_thread: bool) -> Result<ExitReason, VmError> {
        if self.vcpus.is_empty() {
            return Err(VmError::Ended);
        }
        let count = self.vcpus.len();
        vcpu::register_kick_handler()?;
        let mut em = match self.event_manager.take() {
            Some(em) => em,
            None => {
                let mut em: EventManager<Subscriber> =
                    EventManager::new().map_err(VmError::EventLoop)?;
                em.add_subscriber(Arc::new(Mutex::new(ExitEvents(self.exit.clone()))));
                for d in &self.devices {
                    em.add_subscriber(d.subscriber());
                }
                em
            }
        };

        let mut threads = Vec::with_capacity(count);
        let mut spawn_error = None;
        for v in self.vcpus.drain(..) {
            let shared = vcpu::Shared {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                exit: self.exit.clone(),
                seccomp: self.seccomp.clone(),
            };
            match v.spawn(shared) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }

        self.exit.set_running_vcpus(threads.len());
        let mut seccomp_error = None;
        if spawn_error.is_none() && filter_this_thread {
            seccomp_error = self.seccomp.install(ThreadKind::EventLoop).err();
        }
        let mut loop_error = None;
        if spawn_error.is_none() && seccomp_error.is_none() {
            while !self.exit.is_stopping() {
                if let Err(e) = em.run_with_timeout(500) {
                    loop_error = Some(e);
                    break;
                }
                if self.exit.needs_kick() {
                    threads.iter().for_each(vcpu::kick);
                }
            }
        }
        self.exit.request(ExitReason::Stopped);
        let vcpus = join_vcpus(threads);

        if let Some(e) = spawn_error {
            return Err(e.into());
        }
        if let Some(e) = seccomp_error {
            return Err(e.into());
        }
        if let Some(e) = loop_error {
            return Err(VmError::EventLoop(e));
        }
        match self.exit.take_outcome() {
            Some(Ok(ExitReason::Paused)) => {
                if vcpus.len() != count {
                    return Err(VmError::VcpuPanicked);
                }
                self.vcpus = vcpus;
                self.event_manager = Some(em);
                self.exit.reset();
                Ok(ExitReason::Paused)
            }
            Some(Ok(reason)) => Ok(reason),
            Some(Err(e)) => Err(e.into()),
            None => Ok(ExitReason::Stopped),
        }
    }
}

/// Kicks vCPU threads out of KVM_RUN until all of them have exited, then
/// joins them and returns the vCPUs they hand back.
fn join_vcpus(threads: Vec<JoinHandle<Vcpu>>) -> Vec<Vcpu> {
    let start = Instant::now();
    let mut warned = false;
    while threads.iter().any(|t| !t.is_finished()) {
        threads.iter().for_each(vcpu::kick);
        std::thread::sleep(Duration::from_millis(5));
        if !warned && start.elapsed() > Duration::from_secs(5) {
            log::warn!("vCPU threads are slow to stop; still waiting");
            warned = true;
        }
    }
    let mut vcpus = Vec::with_capacity(threads.len());
    for t in threads {
        match t.join() {
            Ok(v) => vcpus.push(v),
            Err(_) => log::error!("a vCPU thread panicked"),
        }
    }
    vcpus
}

/// Drains the exit eventfd so the event loop wakes up and sees the request.
struct ExitEvents(Arc<ExitSignal>);

impl MutEventSubscriber for ExitEvents {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.0.eventfd().read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.0.eventfd(), EventSet::IN)) {
            log::error!("cannot watch the VM exit event: {e:?}");
        }
    }
}
