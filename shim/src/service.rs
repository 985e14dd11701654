//! containerd's task service on the husk runtime: `Create` makes a husk
//! container from the bundle (no VM yet), `Start` launches its monitor
//! (which boots the VM) with containerd's FIFOs as stdio, exec processes
//! run over the agent's exec port, and exits are published as events.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::shim::{self as api};
use containerd_shim::protos::topics;
use containerd_shim::protos::types::empty::Empty;
use containerd_shim::protos::types::task::{ProcessInfo, Status as ApiStatus};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, ExitSignal, TtrpcContext, TtrpcResult};
use husk_bundle::{rootfs, Bundle, DiskDirs, LayerCache, RootfsMount};
use husk_runtime::{DeleteOptions, Runtime, Signal, StdioWiring, VmBoot};

use crate::errors::{Result, ShimError};
use crate::shim::{open_runtime, ID_FILE};
use crate::tasks::{Proc, Status, Stdio, Task, Tasks};

/// Seconds a guest may take to boot (`$HUSK_BOOT_TIMEOUT`, default 90).
const DEFAULT_BOOT_TIMEOUT: u64 = 90;

/// The task service (cheap to clone: shared state).
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// The state every request and watcher thread shares.
pub struct Inner {
    /// containerd namespace.
    pub namespace: String,
    runtime: std::result::Result<Runtime, String>,
    /// The tasks.
    pub tasks: Tasks,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

impl Service {
    /// The service of namespace `ns`.
    pub fn new(ns: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Service {
        Service {
            inner: Arc::new(Inner {
                namespace: ns.to_string(),
                runtime: open_runtime(ns).map_err(|e| e.to_string()),
                tasks: Tasks::default(),
                publisher,
                exit,
            }),
        }
    }
}

impl Inner {
    /// The husk runtime of this namespace.
    pub fn runtime(&self) -> Result<&Runtime> {
        self.runtime
            .as_ref()
            .map_err(|e| ShimError::Failed(format!("opening the husk container store: {e}")))
    }

    /// Publishes an event to containerd (failures are logged).
    pub fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = Context::default();
        if let Err(e) = self.publisher.publish(ctx, topic, &self.namespace, event) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    fn create(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        if self.tasks.lock().contains_key(&req.id) {
            return Err(ShimError::Exists(format!("task {} already exists", req.id)));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Invalid(
                "restoring from a checkpoint is not supported by husk".into(),
            ));
        }
        let dir = Path::new(&req.bundle);
        let bundle = Bundle::load(dir)?;
        let translated = bundle.translate()?;
        let dirs = DiskDirs {
            cache: LayerCache::new(LayerCache::default_dir()),
            scratch: dir.join("husk-layers"),
        };
        let layers = if req.rootfs.is_empty() {
            rootfs::from_dir(&bundle.root_dir(), &dirs)?
        } else {
            let mounts: Vec<RootfsMount> = req
                .rootfs
                .iter()
                .map(|m| RootfsMount {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect();
            rootfs::from_mounts(&mounts, &dirs)?
        };
        log::info!(
            "task {}: {} layer disks, {} converted now",
            req.id,
            layers.disks.len(),
            layers.converted
        );
        let mut plan = translated.into_plan(layers.disks, vm_boot()?);
        if husk_runtime::id::valid_name(&req.id) {
            plan.name = Some(req.id.clone());
        }
        plan.image = req.bundle.clone();
        plan.process.tty = req.terminal;
        plan.process.stdin = !req.stdin.is_empty();
        let memory_mib = plan.memory_mib;
        let husk_id = self.runtime()?.create_from(plan)?;
        if let Err(e) = std::fs::write(dir.join(ID_FILE), husk_id.as_str()) {
            log::warn!("recording the container ID in the bundle: {e}");
        }
        let stdio = Stdio {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let task = Task {
            husk_id,
            bundle: req.bundle.clone(),
            init: Proc::new(stdio),
            execs: Default::default(),
            memory_mib,
        };
        self.tasks.lock().insert(req.id.clone(), task);
        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        ev.io = Some(TaskIO {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            ..Default::default()
        })
        .into();
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(ev));
        Ok(0)
    }

    /// Starts the init process: the monitor boots the VM and runs it with
    /// the FIFOs as stdio; a thread waits for its exit.
    fn start_init(self: &Arc<Self>, id: &str) -> Result<u32> {
        let (husk_id, stdio) = self.tasks.with(id, |t| match t.init.status {
            Status::Created => Ok((t.husk_id.clone(), t.init.stdio.clone())),
            _ => Err(ShimError::Precondition(format!(
                "task {id} was started already"
            ))),
        })?;
        let path = |p: &String| (!p.is_empty()).then(|| p.into());
        let wiring = StdioWiring::Fifos {
            stdin: path(&stdio.stdin),
            stdout: path(&stdio.stdout),
            stderr: path(&stdio.stderr),
        };
        let rt = self.runtime()?;
        if let Err(e) = rt.start(husk_id.as_str(), wiring) {
            let code = match &e {
                husk_runtime::Error::Exec { code, .. } => *code,
                _ => 125,
            };
            self.tasks.with(id, |t| {
                t.init.status = Status::Running;
                Ok(())
            })?;
            self.tasks.exited(id, "", code);
            return Err(e.into());
        }
        let pid = rt
            .container(husk_id.as_str())
            .ok()
            .and_then(|c| c.state.monitor)
            .map_or(0, |m| m.pid as u32);
        self.tasks.with(id, |t| {
            t.init.status = Status::Running;
            t.init.pid = pid;
            Ok(())
        })?;
        let mut ev = TaskStart::new();
        ev.container_id = id.to_string();
        ev.pid = pid;
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(ev));
        let me = self.clone();
        let id = id.to_string();
        std::thread::spawn(move || me.watch_init(&id, husk_id.as_str()));
        Ok(pid)
    }

    /// Waits for the init process's exit (recorded by the monitor, or the
    /// monitor's death) and publishes it, after `TaskOOM` if the guest's
    /// OOM killer killed processes of the container (which is how
    /// containerd's CRI plugin gives the exit the reason "OOMKilled").
    fn watch_init(&self, id: &str, husk_id: &str) {
        let waited = self.runtime().and_then(|rt| {
            let code = rt.wait(husk_id, None)?;
            // The monitor recorded any guest OOM kill before the exit.
            let oom_killed = rt.container(husk_id).is_ok_and(|c| c.state.oom_killed);
            Ok((code, oom_killed))
        });
        let (code, oom_killed) = match waited {
            Ok((code, oom_killed)) => (code.unwrap_or(255), oom_killed),
            Err(e) => {
                log::warn!("waiting for task {id}: {e}");
                (husk_runtime::state::MONITOR_DIED_CODE, false)
            }
        };
        if oom_killed {
            let mut ev = TaskOOM::new();
            ev.container_id = id.to_string();
            self.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(ev));
        }
        self.publish_exit(id, "", code);
    }

    /// Records an exit and publishes `TaskExit`.
    pub fn publish_exit(&self, id: &str, exec_id: &str, code: i32) {
        let Some((pid, at)) = self.tasks.exited(id, exec_id, code) else {
            return;
        };
        let mut ev = TaskExit::new();
        ev.container_id = id.to_string();
        ev.id = if exec_id.is_empty() { id } else { exec_id }.to_string();
        ev.pid = pid;
        ev.exit_status = u32::try_from(code).unwrap_or(255);
        ev.exited_at = Some(timestamp(at)).into();
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(ev));
    }

    fn kill(&self, req: &api::KillRequest) -> Result<()> {
        let signal = i32::try_from(req.signal)
            .ok()
            .and_then(Signal::from_raw)
            .ok_or_else(|| ShimError::Invalid(format!("invalid signal {}", req.signal)))?;
        if !req.exec_id.is_empty() {
            return self.kill_exec(&req.id, &req.exec_id, signal);
        }
        let (husk_id, status) = self
            .tasks
            .with(&req.id, |t| Ok((t.husk_id.clone(), t.init.status)))?;
        match status {
            Status::Stopped => {
                return Err(ShimError::NotFound(format!(
                    "process of task {} already finished",
                    req.id
                )))
            }
            // Nothing runs yet: the task ends as if killed.
            Status::Created => {
                self.tasks.with(&req.id, |t| {
                    t.init.status = Status::Running;
                    Ok(())
                })?;
                self.publish_exit(&req.id, "", 128 + signal.as_raw());
                return Ok(());
            }
            Status::Running => {}
        }
        if req.all {
            let execs: Vec<String> = self
                .tasks
                .with(&req.id, |t| Ok(t.execs.keys().cloned().collect()))?;
            for e in execs {
                let _ = self.kill_exec(&req.id, &e, signal);
            }
        }
        match self.runtime()?.kill(husk_id.as_str(), signal) {
            Err(husk_runtime::Error::NotRunning(_)) => Err(ShimError::NotFound(format!(
                "process of task {} already finished",
                req.id
            ))),
            other => Ok(other?),
        }
    }

    fn delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut resp = api::DeleteResponse::new();
        if !req.exec_id.is_empty() {
            let p = self.tasks.with(&req.id, |t| {
                let p = t.proc_mut(&req.exec_id)?.clone();
                if p.status == Status::Running {
                    return Err(ShimError::Precondition(format!(
                        "exec process {} is running",
                        req.exec_id
                    )));
                }
                t.execs.remove(&req.exec_id);
                Ok(p)
            })?;
            fill_delete(&mut resp, &p);
            return Ok(resp);
        }
        let (husk_id, init) = self
            .tasks
            .with(&req.id, |t| Ok((t.husk_id.clone(), t.init.clone())))?;
        if init.status == Status::Running {
            return Err(ShimError::Precondition(format!(
                "task {} is running; kill it first",
                req.id
            )));
        }
        let opts = DeleteOptions {
            force: true,
            volumes: true,
        };
        match self.runtime()?.delete(husk_id.as_str(), opts) {
            Ok(_) | Err(husk_runtime::Error::NoSuchContainer(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Snapshots of removed images leave disks behind; drop those.
        match LayerCache::new(LayerCache::default_dir()).prune() {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} snapshot layer disks of removed snapshots"),
            Err(e) => log::warn!("pruning snapshot layer disks: {e}"),
        }
        let task = self.tasks.lock().remove(&req.id);
        self.tasks.notify();
        if let Some(t) = task {
            let _ = std::fs::remove_file(Path::new(&t.bundle).join(ID_FILE));
        }
        fill_delete(&mut resp, &init);
        let mut ev = TaskDelete::new();
        ev.container_id = req.id.clone();
        ev.id = req.id.clone();
        ev.pid = init.pid;
        ev.exit_status = init.exit_status;
        ev.exited_at = resp.exited_at.clone();
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(ev));
        Ok(resp)
    }

    fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        self.tasks.with(&req.id, |t| {
            let bundle = t.bundle.clone();
            let p = t.proc_mut(&req.exec_id)?;
            let mut resp = api::StateResponse::new();
            resp.id = if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            };
            resp.exec_id = req.exec_id.clone();
            resp.bundle = bundle;
            resp.pid = p.pid;
            resp.status = match p.status {
                Status::Created => ApiStatus::CREATED,
                Status::Running => ApiStatus::RUNNING,
                Status::Stopped => ApiStatus::STOPPED,
            }
            .into();
            resp.stdin = p.stdio.stdin.clone();
            resp.stdout = p.stdio.stdout.clone();
            resp.stderr = p.stdio.stderr.clone();
            resp.terminal = p.stdio.terminal;
            resp.exit_status = p.exit_status;
            resp.exited_at = p.exited_at.map(timestamp).into();
            Ok(resp)
        })
    }

    fn pids(&self, req: &api::PidsRequest) -> Result<api::PidsResponse> {
        self.tasks.with(&req.id, |t| {
            let mut resp = api::PidsResponse::new();
            let running = |p: &Proc| p.status == Status::Running && p.pid > 0;
            let procs = std::iter::once(&t.init).chain(t.execs.values().map(|e| &e.proc_));
            for p in procs.filter(|p| running(p)) {
                let mut info = ProcessInfo::new();
                info.pid = p.pid;
                resp.processes.push(info);
            }
            Ok(resp)
        })
    }

    /// Sends the init process's terminal a new size, or closes its stdin,
    /// through the monitor's attach socket.
    fn to_init(&self, id: &str, msg: husk_protocol::Message) -> Result<()> {
        let husk_id = self.tasks.with(id, |t| Ok(t.husk_id.clone()))?;
        let mut conn = self.runtime()?.attach(husk_id.as_str(), None)?;
        conn.send(&msg).map_err(|e| {
            ShimError::Failed(format!(
                "talking to the container's monitor: {}",
                husk_runtime::error_chain(&e)
            ))
        })
    }

    fn shutdown(&self) {
        if self.tasks.lock().is_empty() {
            self.exit.signal();
        }
    }
}

fn fill_delete(resp: &mut api::DeleteResponse, p: &Proc) {
    resp.pid = p.pid;
    resp.exit_status = p.exit_status;
    resp.exited_at = Some(timestamp(p.exited_at.unwrap_or_else(SystemTime::now))).into();
}

/// The kernel and agent disk found the way `husk` finds them, and the
/// boot timeout and start mode from the environment.
fn vm_boot() -> Result<VmBoot> {
    use husk_sandbox::assets;
    let failed = |e: assets::AssetError| ShimError::Failed(husk_runtime::error_chain(&e));
    let kernel = assets::kernel(None).map_err(failed)?;
    let agent = assets::agent().map_err(failed)?;
    let agent_disk = assets::agent_disk(&agent, &assets::cache_dir()).map_err(failed)?;
    let boot_timeout = std::env::var("HUSK_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BOOT_TIMEOUT);
    Ok(VmBoot {
        kernel,
        agent_disk,
        boot_timeout,
        start: husk_sandbox::StartMode::from_env(),
    })
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = self.inner.create(&req)?;
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = if req.exec_id.is_empty() {
            self.inner.start_init(&req.id)?
        } else {
            self.inner.start_exec(&req.id, &req.exec_id)?
        };
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        Ok(self.inner.state(&req)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        Ok(self.inner.pids(&req)?)
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        self.inner.kill(&req)?;
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        self.inner.add_exec(&req)?;
        let mut ev = TaskExecAdded::new();
        ev.container_id = req.id.clone();
        ev.exec_id = req.exec_id.clone();
        self.inner
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(ev));
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        let msg = husk_protocol::Message::Resize {
            rows: u16::try_from(req.height).unwrap_or(u16::MAX),
            cols: u16::try_from(req.width).unwrap_or(u16::MAX),
        };
        if req.exec_id.is_empty() {
            self.inner.to_init(&req.id, msg)?;
        } else {
            self.inner.to_exec(&req.id, &req.exec_id, msg)?;
        }
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        if !req.stdin {
            return Ok(Empty::new());
        }
        let msg = husk_protocol::Message::StdinEof;
        if req.exec_id.is_empty() {
            self.inner.to_init(&req.id, msg)?;
        } else {
            self.inner.to_exec(&req.id, &req.exec_id, msg)?;
        }
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let (status, at) = self.inner.tasks.wait(&req.id, &req.exec_id)?;
        let mut resp = api::WaitResponse::new();
        resp.exit_status = status;
        resp.exited_at = Some(timestamp(at)).into();
        Ok(resp)
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.inner.delete(&req)?)
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (pid, memory_mib) = self
            .inner
            .tasks
            .with(&req.id, |t| Ok((t.init.pid, t.memory_mib)))?;
        let mut resp = api::StatsResponse::new();
        resp.stats = Some(crate::stats::metrics(pid, memory_mib)?).into();
        Ok(resp)
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .inner
            .tasks
            .with(&req.id, |t| Ok(t.init.pid))
            .unwrap_or(0);
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = task_pid;
        resp.version = format!("husk {}", env!("CARGO_PKG_VERSION"));
        Ok(resp)
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.inner.shutdown();
        Ok(Empty::new())
    }
}
