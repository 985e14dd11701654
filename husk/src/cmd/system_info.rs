//! `husk system df`, `husk system prune`, `husk info` and `husk version`:
//! Docker's layouts with husk's facts. `--format` templates are rendered
//! by `inspect`'s renderer against the same JSON documents.
//!
//! What `system df` counts:
//! - Images: the image store's images (their layer blobs' size, as
//!   `husk images` shows it); active: used by a container.
//! - Containers: each container's directory (its writable disk as
//!   stored, logs, state); active: running; reclaimable: the others.
//! - Local Volumes: each volume's disk as stored; active: mounted by a
//!   container.
//! - Build Cache: the warm-start templates (snapshots of booted VMs,
//!   rebuilt on next need: all reclaimable).

use std::path::Path;

use anyhow::Result;
use clap::Args;
use husk_sandbox::TemplateStore;
use serde_json::{json, Value};

use super::container::{render, runtime};
use super::image::output::{human_size, print_table};
use super::image::RootArgs;
use super::prune;

/// `husk system df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Go-template-like format per row: {{.Type}} {{.TotalCount}}
    /// {{.Active}} {{.Size}} {{.Reclaimable}}; `table ` prints a header;
    /// `{{json .}}` a row as JSON.
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    root: RootArgs,
}

/// `husk system prune`.
#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Also remove anonymous volumes no container uses.
    #[arg(long)]
    volumes: bool,
    #[command(flatten)]
    root: RootArgs,
}

/// `husk info` and `husk version`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Go-template-like format, e.g. '{{json .}}' or '{{.Server.Version}}'.
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[command(flatten)]
    root: RootArgs,
}

/// One `df` row.
struct Usage {
    kind: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

impl Usage {
    fn doc(&self) -> Value {
        let pct = (self.reclaimable * 100)
            .checked_div(self.size)
            .map(|p| format!(" ({p}%)"))
            .unwrap_or_default();
        json!({
            "Type": self.kind,
            "TotalCount": self.total.to_string(),
            "Active": self.active.to_string(),
            "Size": human_size(self.size),
            "Reclaimable": format!("{}{pct}", human_size(self.reclaimable)),
        })
    }
}

/// The four rows.
fn usage(root: &RootArgs) -> Result<Vec<Usage>> {
    let rt = runtime(root)?;
    let containers = rt.list()?;
    let store = rt.image_store()?;
    let users = rt.image_users()?;
    let images = store.list()?;
    let used = |img: &images::Image| users.iter().any(|u| u.image_id == img.id);
    let sized = |f: &dyn Fn(&images::Image) -> bool| -> u64 {
        images.iter().filter(|i| f(i)).map(|i| i.size()).sum()
    };
    let mut rows = vec![Usage {
        kind: "Images",
        total: images.len(),
        active: images.iter().filter(|i| used(i)).count(),
        size: sized(&|_| true),
        reclaimable: sized(&|i| !used(i)),
    }];
    let sizes: Vec<(bool, u64)> = containers
        .iter()
        .map(|c| (c.state.is_running(), rt.container_disk_usage(c)))
        .collect();
    rows.push(Usage {
        kind: "Containers",
        total: sizes.len(),
        active: sizes.iter().filter(|(r, _)| *r).count(),
        size: sizes.iter().map(|(_, s)| s).sum(),
        reclaimable: sizes.iter().filter(|(r, _)| !r).map(|(_, s)| s).sum(),
    });
    let mounted: Vec<&str> = containers
        .iter()
        .flat_map(|c| c.config.mounts.iter().map(|m| m.name.as_str()))
        .collect();
    let vols: Vec<(bool, u64)> = rt
        .volumes()
        .list()?
        .iter()
        .map(|v| {
            let size = v
                .disk
                .parent()
                .map_or(0, husk_sandbox::template::disk_usage);
            (mounted.contains(&v.name.as_str()), size)
        })
        .collect();
    rows.push(Usage {
        kind: "Local Volumes",
        total: vols.len(),
        active: vols.iter().filter(|(u, _)| *u).count(),
        size: vols.iter().map(|(_, s)| s).sum(),
        reclaimable: vols.iter().filter(|(u, _)| !u).map(|(_, s)| s).sum(),
    });
    let templates = TemplateStore::default_store().list().unwrap_or_default();
    let size = templates.iter().map(|t| t.disk_usage()).sum();
    rows.push(Usage {
        kind: "Build Cache",
        total: templates.len(),
        active: 0,
        size,
        reclaimable: size,
    });
    Ok(rows)
}

/// `husk system df`.
pub fn df(a: DfArgs) -> Result<i32> {
    let docs: Vec<Value> = usage(&a.root)?.iter().map(Usage::doc).collect();
    let format = a
        .format
        .as_deref()
        .unwrap_or("table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}");
    let format = format.replace("\\t", "\t");
    match format.strip_prefix("table") {
        Some(body) => {
            let body = body.trim_start_matches(' ');
            let header = json!({
                "Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE",
                "Size": "SIZE", "Reclaimable": "RECLAIMABLE",
            });
            let mut rows = vec![cells(&render(body, &header))];
            rows.extend(docs.iter().map(|d| cells(&render(body, d))));
            print_table(&rows);
        }
        None => {
            for d in &docs {
                println!("{}", render(&format, d));
            }
        }
    }
    Ok(0)
}

fn cells(line: &str) -> Vec<String> {
    line.split('\t').map(String::from).collect()
}

/// `husk system prune`: stopped containers, dangling images, the
/// warm-start templates, and with `--volumes` unused anonymous volumes.
pub fn system_prune(a: SystemPruneArgs) -> Result<i32> {
    let mut warning = String::from("This will remove:\n  - all stopped containers\n");
    if a.volumes {
        warning.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    warning.push_str("  - all dangling images\n  - unused build cache\n");
    if !a.force && !prune::confirm(&warning)? {
        return Ok(0);
    }
    let rt = runtime(&a.root)?;
    let mut bytes = prune::report("Containers", &rt.prune_containers(|_| false)?);
    if a.volumes {
        bytes += prune::report("Volumes", &rt.prune_volumes(false)?);
    }
    let images = rt.image_store()?.prune(&rt.image_users()?)?;
    if !images.images.is_empty() {
        println!("Deleted Images:");
        for i in &images.images {
            println!("deleted: {i}");
        }
        println!();
    }
    bytes += images.bytes;
    let templates = TemplateStore::default_store().prune()?;
    if !templates.is_empty() {
        println!("Deleted build cache objects:");
        for (t, size) in &templates {
            println!("{}", t.key);
            bytes += size;
        }
        println!();
    }
    prune::print_total(bytes);
    Ok(0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The host's `PRETTY_NAME` (/etc/os-release).
fn os_name() -> String {
    read_trimmed("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// MemTotal in bytes (/proc/meminfo).
fn mem_total() -> u64 {
    read_trimmed("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Docker's `info` document, husk's facts.
fn info_doc(root: &RootArgs) -> Result<Value> {
    let rt = runtime(root)?;
    let containers = rt.list()?;
    let running = containers.iter().filter(|c| c.state.is_running()).count();
    let paused = containers
        .iter()
        .filter(|c| c.state.status_word() == "paused")
        .count();
    let images = rt.image_store()?.list()?.len();
    let jail = if std::env::var(husk_sandbox::jail::NO_JAIL_ENV).as_deref() == Ok("1") {
        "disabled".to_string()
    } else {
        match husk_sandbox::jail::uid::UidRange::configured() {
            Ok(r) => format!("{}-{}", r.base, u64::from(r.base) + u64::from(r.count) - 1),
            Err(e) => format!("invalid: {e}"),
        }
    };
    let guest_kernel = match husk_sandbox::assets::kernel(None) {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("not found ({e:#})"),
    };
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    Ok(json!({
        "Containers": containers.len(),
        "ContainersRunning": running - paused,
        "ContainersPaused": paused,
        "ContainersStopped": containers.len() - running,
        "Images": images,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Driver": "erofs+overlayfs (in the guest)",
        "CgroupVersion": cgroup,
        "Runtimes": { "husk": { "path": std::env::current_exe().ok() } },
        "SecurityOptions": [
            format!("name=seccomp,profile={}", serde_json::to_value(husk_sandbox::seccomp_mode())?.as_str().unwrap_or("enforce")),
            format!("name=jail,uids={jail}"),
        ],
        "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
        "GuestKernel": guest_kernel,
        "KVM": kvm,
        "JailUids": jail,
        "OperatingSystem": os_name(),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total(),
        "Name": read_trimmed("/proc/sys/kernel/hostname"),
        "DockerRootDir": rt.layout().root(),
    }))
}

/// `husk info`.
pub fn info(a: InfoArgs) -> Result<i32> {
    let d = info_doc(&a.root)?;
    if let Some(f) = &a.format {
        println!("{}", render(f, &d));
        return Ok(0);
    }
    let s = |k: &str| render(&format!("{{{{.{k}}}}}"), &d);
    let v = env!("CARGO_PKG_VERSION");
    println!("Client:\n Version:    {v}\n Context:    default\n");
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(" Runtimes: husk");
    println!(" Security Options:");
    println!(
        "  seccomp\n   Profile: {}",
        d["SecurityOptions"][0]
            .as_str()
            .unwrap_or_default()
            .rsplit('=')
            .next()
            .unwrap_or_default()
    );
    println!("  jail\n   UIDs: {}", s("JailUids"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Guest Kernel: {}", s("GuestKernel"));
    println!(" KVM: {}", s("KVM"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: linux");
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {}",
        human_size(d["MemTotal"].as_u64().unwrap_or(0))
    );
    println!(" Name: {}", s("Name"));
    println!(" Husk Root Dir: {}", s("DockerRootDir"));
    Ok(0)
}

/// `husk version`: Docker's Client and Server blocks (one binary: the
/// same version; the server's components are the VMM side's).
pub fn version(a: InfoArgs) -> Result<i32> {
    let v = env!("CARGO_PKG_VERSION");
    let os_arch = format!("linux/{}", std::env::consts::ARCH);
    let agent = husk_sandbox::assets::agent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("not found ({e:#})"));
    let kernel = husk_sandbox::assets::kernel(None)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("not found ({e:#})"));
    let d = json!({
        "Client": { "Platform": { "Name": "husk" }, "Version": v, "Os": "linux",
                    "Arch": std::env::consts::ARCH },
        "Server": {
            "Platform": { "Name": "husk" },
            "Version": v,
            "Os": "linux",
            "Arch": std::env::consts::ARCH,
            "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "Components": [
                { "Name": "Engine", "Version": v },
                { "Name": "husk-agent", "Version": v, "Details": { "Path": agent } },
                { "Name": "guest kernel", "Version": "", "Details": { "Path": kernel } },
            ],
        },
    });
    if let Some(f) = &a.format {
        println!("{}", render(f, &d));
        return Ok(0);
    }
    println!("Client:\n Version:           {v}\n OS/Arch:           {os_arch}\n Context:           default\n");
    println!("Server: husk\n Engine:\n  Version:          {v}\n  OS/Arch:          {os_arch}");
    println!(
        "  Kernel Version:   {}",
        read_trimmed("/proc/sys/kernel/osrelease")
    );
    println!(" husk-agent:\n  Version:          {v}\n  Path:             {agent}");
    println!(" guest kernel:\n  Path:             {kernel}");
    Ok(0)
}
