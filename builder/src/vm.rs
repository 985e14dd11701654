//! RUN in a microVM: the image's layer disks plus a fresh writable ext4
//! disk, the agent's container path (`CreateContainer` + `Exec` on the boot
//! connection), the command's output streamed to the build's output. The
//! changes stay on the writable disk's `upper/` directory for the caller
//! to turn into a layer.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use husk_protocol::{
    write_message, ContainerSpec, ExecRequest, FrameDecoder, Message, RootFs, AGENT_PORT,
};
use husk_runtime::monitor::boot::{
    self, layer_serial, AGENT_SERIAL, CMDLINE, GUEST_CID, RW_SERIAL,
};
use husk_runtime::signals::Signals;
use husk_runtime::vmthread::VmThread;

/// How long the agent may take to tear down and power off after the
/// command ended.
const TEARDOWN: Duration = Duration::from_secs(60);

/// How long the guest may take to power off after the agent's teardown.
const POWEROFF: Duration = Duration::from_secs(30);

/// Size of a RUN step's (sparse) writable disk.
pub const DISK_SIZE: u64 = 8 << 30;

/// How RUN steps' VMs are made.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// The guest kernel and the EROFS agent disk, or why they are not
    /// available (only an error once a RUN step needs them).
    pub assets: Result<(PathBuf, PathBuf), String>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// How long the guest may take to reach the agent.
    pub boot_timeout: Duration,
    /// Outbound network (passt) for RUN steps.
    pub network: bool,
    /// Where the VMs' sockets go (`/run/husk` or `$HUSK_RUN_DIR`).
    pub run_dir: PathBuf,
}

/// Errors running a step in a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A host-side operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The layer disks could not be prepared.
    #[error(transparent)]
    Layers(#[from] images::LayerError),
    /// The network could not be set up.
    #[error("RUN network (use --network none to build without)")]
    Network(#[from] husk_net::NetError),
    /// The VM could not be created.
    #[error("creating the VM")]
    Vm(#[from] vmm::VmError),
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    /// The VM or the agent failed (with the console log kept).
    #[error("{why} (console log: {console})")]
    Failed {
        /// What happened.
        why: String,
        /// The console log.
        console: String,
    },
    /// The agent refused the command.
    #[error("{detail}")]
    Refused {
        /// Docker's exit code for the failure.
        code: i32,
        /// The agent's message.
        detail: String,
    },
    /// The guest kernel or agent is missing.
    #[error("RUN needs the guest kernel and agent: {0}")]
    Assets(String),
    /// husk was interrupted by a signal.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
}

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
    let context = context.into();
    move |source| VmError::Io { context, source }
}

/// Creates a sparse ext4 disk of [`DISK_SIZE`] at `path`.
pub fn make_disk(path: &Path) -> Result<(), VmError> {
    let f = std::fs::File::create(path).map_err(io_ctx(format!("creating {}", path.display())))?;
    f.set_len(DISK_SIZE)
        .map_err(io_ctx(format!("sizing {}", path.display())))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .output()
        .map_err(io_ctx("running mkfs.ext4 (install e2fsprogs)"))?;
    if !out.status.success() {
        return Err(VmError::Mkfs(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// One RUN step's VM inputs.
pub struct RunStep<'a> {
    /// The image's layer disks, bottom first.
    pub layers: &'a [PathBuf],
    /// The writable disk (made by [`make_disk`]).
    pub disk: &'a Path,
    /// Where the console log goes.
    pub console: &'a Path,
    /// The process.
    pub request: ExecRequest,
    /// The container's hostname.
    pub hostname: String,
}

/// Boots a VM for `step`, runs its command with output to `out`, waits for
/// the agent's teardown and returns the command's exit code (128+N when
/// killed by signal N).
pub fn run(
    settings: &VmSettings,
    step: RunStep<'_>,
    out: &mut dyn Write,
    signals: &Signals,
) -> Result<i32, VmError> {
    if let Some(sig) = signals.received() {
        return Err(VmError::Interrupted(sig));
    }
    let (kernel, agent_disk) = settings.assets.clone().map_err(VmError::Assets)?;
    std::fs::create_dir_all(&settings.run_dir)
        .map_err(io_ctx(format!("creating {}", settings.run_dir.display())))?;
    let sockets = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&settings.run_dir)
        .map_err(io_ctx("creating a socket directory"))?;
    let vsock = sockets.path().join("v.sock");
    let listener = UnixListener::bind(format!("{}_{AGENT_PORT}", vsock.display()))
        .map_err(io_ctx("listening for the agent"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_ctx("listening for the agent"))?;
    let net = match settings.network {
        true => Some(husk_net::Network::start(
            husk_net::NetworkOptions::default(),
        )?),
        false => None,
    };
    let disk = |path: &Path, read_only: bool, serial: String| vmm::DiskConfig {
        path: path.to_path_buf(),
        read_only,
        serial,
    };
    let mut disks = vec![disk(&agent_disk, true, AGENT_SERIAL.into())];
    for (i, l) in step.layers.iter().enumerate() {
        disks.push(disk(l, true, layer_serial(i)));
    }
    disks.push(disk(step.disk, false, RW_SERIAL.into()));
    let config = vmm::VmConfig {
        kernel,
        initrd: None,
        cmdline_extra: CMDLINE.to_string(),
        vcpus: settings.cpus,
        mem_mib: settings.memory_mib,
        disks,
        vsock: Some(vmm::VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: vsock.clone(),
        }),
        net: net.as_ref().and_then(|n| n.net_config()),
        console: vmm::ConsoleOutput::File(step.console.to_path_buf()),
    };
    let spec = ContainerSpec {
        root: RootFs::Layers {
            layers: (0..step.layers.len()).map(layer_serial).collect(),
            writable: RW_SERIAL.into(),
        },
        volumes: Vec::new(),
        hosts: net
            .as_ref()
            .map(|n| n.hosts(&step.hostname))
            .unwrap_or_default(),
        hostname: step.hostname.clone(),
        resolv_conf: net.as_ref().and_then(|n| n.resolv_conf()),
        network: net.as_ref().and_then(|n| n.spec()),
    };
    let vm = vmm::Vm::new(config)?;
    let mut vm = VmThread::start(vm).map_err(io_ctx("starting the VM thread"))?;
    let mut session = Session {
        signals,
        vm: &vm,
        console: step.console,
    };
    let result = session.drive(&listener, spec, step.request, settings.boot_timeout, out);
    if let Ok(code) = result {
        // The agent tore down (disks synced and unmounted): the guest
        // powers off by itself; only then is the writable disk complete.
        let deadline = Instant::now() + POWEROFF;
        while !vm.wait_done(Some(signals), deadline) && Instant::now() < deadline {
            if let Some(sig) = signals.received() {
                vm.stop();
                return Err(VmError::Interrupted(sig));
            }
        }
        return match vm.stop() {
            Some(Ok(vmm::ExitReason::PowerOff)) => Ok(code),
            other => Err(VmError::Failed {
                why: boot::early_end(
                    other,
                    step.console,
                    "the guest did not power off after the command",
                ),
                console: step.console.display().to_string(),
            }),
        };
    }
    let vm_result = vm.stop();
    match result {
        Err(VmError::Failed { why, console }) => {
            let why = boot::early_end(vm_result, step.console, &why);
            Err(VmError::Failed { why, console })
        }
        other => other,
    }
}

/// The agent session of one RUN step.
struct Session<'a> {
    signals: &'a Signals,
    vm: &'a VmThread,
    console: &'a Path,
}

enum Wake {
    Ready,
    Signal(i32),
    VmDone,
    Timeout,
}

impl Session<'_> {
    fn failed(&self, why: impl Into<String>) -> VmError {
        VmError::Failed {
            why: why.into(),
            console: self.console.display().to_string(),
        }
    }

    fn wait(&self, fd: i32, deadline: Instant) -> Result<Wake, VmError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Wake::Timeout);
            }
            let mut fds = [fd, self.signals.fd(), self.vm.done_fd()].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            let ms = left.as_millis().min(60_000) as i32 + 1;
            // SAFETY: a valid array of three pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_ctx("waiting for the agent")(e));
            }
            if fds[1].revents != 0 {
                if let Some(sig) = self.signals.received() {
                    return Ok(Wake::Signal(sig));
                }
            }
            if fds[0].revents != 0 {
                return Ok(Wake::Ready);
            }
            if fds[2].revents != 0 {
                return Ok(Wake::VmDone);
            }
        }
    }

    fn accept(&self, listener: &UnixListener, timeout: Duration) -> Result<UnixStream, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            match listener.accept() {
                Ok((s, _)) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_ctx("accepting the agent's connection")(e)),
            }
            match self.wait(listener.as_raw_fd(), deadline)? {
                Wake::Ready => {}
                Wake::Signal(sig) => return Err(VmError::Interrupted(sig)),
                Wake::VmDone => return Err(self.failed("the VM ended before the agent connected")),
                Wake::Timeout => {
                    return Err(self.failed(format!(
                        "the agent did not connect within {} s",
                        timeout.as_secs()
                    )))
                }
            }
        }
    }

    fn drive(
        &mut self,
        listener: &UnixListener,
        spec: ContainerSpec,
        request: ExecRequest,
        boot_timeout: Duration,
        out: &mut dyn Write,
    ) -> Result<i32, VmError> {
        let mut conn = self.accept(listener, boot_timeout)?;
        conn.set_nonblocking(false)
            .map_err(io_ctx("agent connection"))?;
        conn.set_read_timeout(Some(boot_timeout))
            .and_then(|()| conn.set_write_timeout(Some(boot_timeout)))
            .map_err(io_ctx("agent connection"))?;
        husk_runtime::vsock::greet(&mut conn).map_err(|e| self.failed(e.to_string()))?;
        let send = |conn: &mut UnixStream, m: &Message| {
            write_message(conn, m).map_err(|e| VmError::Failed {
                why: format!("sending to the agent: {e}"),
                console: self.console.display().to_string(),
            })
        };
        send(&mut conn, &Message::CreateContainer(spec))?;
        let mut reader = Reader::new();
        let deadline = Instant::now() + boot_timeout;
        match self.next(&mut conn, &mut reader, deadline)? {
            Some(Message::Ok) => {}
            Some(Message::Error { detail, .. }) => {
                return Err(self.failed(format!(
                    "the agent could not create the build container: {detail}"
                )))
            }
            other => return Err(self.failed(format!("unexpected agent message {other:?}"))),
        }
        send(&mut conn, &Message::Exec(request))?;
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let code = loop {
            match self.next(&mut conn, &mut reader, far)? {
                Some(Message::Started { .. }) => {}
                Some(Message::Stdout(b)) | Some(Message::Stderr(b)) => {
                    // The build output going away must not stop the step.
                    let _ = out.write_all(&b).and_then(|()| out.flush());
                }
                Some(Message::Exited { code }) => break code,
                Some(Message::Signaled { signal }) => {
                    break husk_protocol::signal_exit_code(signal)
                }
                Some(Message::Error { code, detail }) => {
                    return Err(VmError::Refused {
                        code: code.exit_code(),
                        detail,
                    })
                }
                Some(other) => {
                    return Err(self.failed(format!("unexpected agent message {other:?}")))
                }
                None => {
                    return Err(
                        self.failed("the agent closed the connection before the command ended")
                    )
                }
            }
        };
        // Teardown: the agent syncs, unmounts and closes the connection
        // (the caller checks that the guest then powered off).
        let deadline = Instant::now() + TEARDOWN;
        loop {
            match self.next(&mut conn, &mut reader, deadline) {
                Ok(Some(_)) => {}
                Ok(None) | Err(VmError::Failed { .. }) => return Ok(code),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next message (`None`: the agent closed the connection).
    fn next(
        &self,
        conn: &mut UnixStream,
        reader: &mut Reader,
        deadline: Instant,
    ) -> Result<Option<Message>, VmError> {
        loop {
            if let Some(m) = reader
                .decoder
                .next_message()
                .map_err(|e| self.failed(format!("bad message from the agent: {e}")))?
            {
                return Ok(Some(m));
            }
            if reader.eof {
                return Ok(None);
            }
            match self.wait(conn.as_raw_fd(), deadline)? {
                Wake::Ready => reader
                    .fill(conn)
                    .map_err(|e| self.failed(format!("reading from the agent: {e}")))?,
                Wake::Signal(sig) => return Err(VmError::Interrupted(sig)),
                Wake::VmDone => {
                    // Read what is left before reporting the VM's end.
                    conn.set_nonblocking(true)
                        .map_err(io_ctx("agent connection"))?;
                    match reader.fill(conn) {
                        Ok(()) if reader.progress => {}
                        _ => return Err(self.failed("the VM ended unexpectedly")),
                    }
                }
                Wake::Timeout => return Err(self.failed("the agent did not answer in time")),
            }
        }
    }
}

/// Buffered frames from the agent.
struct Reader {
    decoder: FrameDecoder,
    buf: Vec<u8>,
    eof: bool,
    progress: bool,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            decoder: FrameDecoder::new(),
            buf: vec![0; 128 << 10],
            eof: false,
            progress: false,
        }
    }

    fn fill(&mut self, conn: &mut UnixStream) -> io::Result<()> {
        self.progress = false;
        match conn.read(&mut self.buf) {
            Ok(0) => {
                self.eof = true;
                self.progress = true;
            }
            Ok(n) => {
                self.decoder.push(&self.buf[..n]);
                self.progress = true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.eof = true,
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
