//! `husk vm ...`: boot a microVM and run one command in it.
//!
//! The VM is a container like any other (through the sandbox layer) whose
//! root is a plain disk: the first `--disk`, or the agent disk itself.
//! Every path stops the VM and removes the per-run directory (sockets,
//! default console log), except that on a VM/agent failure the console log
//! is kept and named in the error.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use husk_protocol::{ContainerSpec, ExecRequest, RootDisk, RootFs};
use husk_sandbox::contract::AGENT_SERIAL;
use husk_sandbox::oneshot::{Completion, Exit, OneShot, OneShotError, Stream};
use husk_sandbox::{assets, DiskRole, RunDir, Sandbox, SandboxConfig, Signals, StartMode};

/// How long the agent may take to sync and unmount after the command.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the guest may take to power off after the agent finished its
/// teardown (disks synced and unmounted) before husk stops the VM itself.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);

/// The guest's hostname.
const HOSTNAME: &str = "husk";

/// A user disk.
#[derive(Debug, Clone)]
struct Disk {
    /// Image file (or block device).
    path: PathBuf,
    /// Attach read-only.
    read_only: bool,
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Boot a microVM and run a command in the given root filesystem.
    Run(RunArgs),
}

/// `husk vm run` flags.
#[derive(Args)]
pub struct RunArgs {
    /// Guest kernel (vmlinux); default: $HUSK_KERNEL, then the installed one.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// A disk image, attached as disk0, disk1, ...; the first is the root.
    /// Append `:ro` to attach it read-only.
    #[arg(long = "disk", value_name = "PATH[:ro]")]
    disks: Vec<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Write the guest console to FILE (default: a file in the run
    /// directory, kept only on failure).
    #[arg(long, value_name = "FILE")]
    console: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy husk's).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Working directory inside the guest root.
    #[arg(short = 'w', long, value_name = "DIR", default_value = "/")]
    workdir: String,
    /// Publish a guest port on the host: [IP:][HOST_PORT:]GUEST_PORT[/tcp|udp]
    /// (implies --network passt).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// The guest's network: none (default without -p), passt (user-mode,
    /// default with -p), tap or tap:NAME (root).
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Add a line to the guest's /etc/hosts (with a network): NAME:IP;
    /// NAME:host-gateway names the host and lets the guest reach it.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Seconds the guest may take to boot and reach the agent.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 90,
        env = "HUSK_BOOT_TIMEOUT"
    )]
    boot_timeout: u64,
    /// Boot the VM from the kernel instead of restoring it from a
    /// warm-start template (also: `HUSK_COLD=1`).
    #[arg(long)]
    cold: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(command: VmCommand) -> Result<i32> {
    match command {
        VmCommand::Run(args) => run_vm(args),
    }
}

fn run_vm(args: RunArgs) -> Result<i32> {
    let signals = Signals::install().context("installing signal handlers")?;
    let kernel = assets::kernel(args.kernel.as_deref())?;
    let disks = args
        .disks
        .iter()
        .map(|d| parse_disk(d))
        .collect::<Result<Vec<_>>>()?;
    let root = match disks.first() {
        Some(d) => root_disk(d)?,
        // The agent disk itself: EROFS, read-only.
        None => RootDisk {
            serial: AGENT_SERIAL.into(),
            fs_type: "erofs".into(),
            read_only: true,
        },
    };
    check_kvm()?;
    let mut network = start_network(args.network.as_deref(), &args.publish, &args.add_host)?;
    let agent = assets::agent()?;
    let agent_disk = assets::agent_disk(&agent, &assets::cache_dir())?;
    let rundir = RunDir::create("vm-")?;
    let console = args
        .console
        .clone()
        .unwrap_or_else(|| rundir.path().join("console.log"));
    let config = SandboxConfig {
        kernel,
        agent_disk,
        disks: disks
            .iter()
            .enumerate()
            .map(|(i, d)| husk_sandbox::Disk {
                path: d.path.clone(),
                role: DiskRole::User(i),
                read_only: d.read_only,
            })
            .collect(),
        vcpus: args.cpus,
        memory_mib: args.memory,
        net: network.as_ref().and_then(|n| n.net_config()),
        disk_rate_limit: Default::default(),
        console: console.clone(),
        vsock: rundir.path().join("vsock.sock"),
        start: StartMode::choose(args.cold),
        shares: Vec::new(),
    };
    let spec = ContainerSpec {
        root: RootFs::Disk(root),
        shares: Vec::new(),
        volumes: Vec::new(),
        hostname: HOSTNAME.into(),
        hosts: network
            .as_ref()
            .map(|n| n.hosts(HOSTNAME))
            .unwrap_or_default(),
        resolv_conf: None,
        network: network.as_ref().and_then(|n| n.spec()),
        files: Vec::new(),
        tmpfs: Vec::new(),
        sysctls: Vec::new(),
        read_only_root: false,
    };
    let request = ExecRequest {
        argv: args.command,
        env: environment(&args.env),
        cwd: args.workdir,
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security: Default::default(),
    };
    let job = OneShot {
        spec,
        request,
        boot_timeout: Duration::from_secs(args.boot_timeout),
        teardown_timeout: TEARDOWN_TIMEOUT,
        poweroff_timeout: POWEROFF_GRACE,
    };
    let mut broken = [false; 2];
    let mut relay_output = |stream: Stream, bytes: &[u8]| match stream {
        Stream::Stdout => relay(&mut std::io::stdout(), bytes, &mut broken[0]),
        Stream::Stderr => relay(&mut std::io::stderr(), bytes, &mut broken[1]),
    };
    let debug = std::env::var_os("HUSK_DEBUG").is_some();
    let result = Sandbox::start(&config, Some(&signals))
        .map_err(OneShotError::from)
        .and_then(|mut sandbox| {
            if debug {
                match sandbox.template() {
                    Some(key) => eprintln!("husk: debug: restored from template {key}"),
                    None => eprintln!("husk: debug: booted from the kernel"),
                }
            }
            sandbox.run_to_completion(&signals, job, &mut relay_output)
        });
    if let Some(n) = network.as_mut() {
        n.stop();
    }
    match result {
        Ok(Completion { exit, powered_off }) => {
            if debug {
                eprintln!("husk: debug: the guest powered off: {powered_off}");
            }
            match exit {
                Exit::Code(code) => Ok(code),
                Exit::Refused { code, detail } => {
                    eprintln!("husk: {detail}");
                    Ok(code)
                }
            }
        }
        Err(OneShotError::Interrupted(sig)) => Ok(128 + sig),
        Err(err) => {
            let kept = match &args.console {
                Some(path) => path.clone(),
                None => rundir.keep(&console),
            };
            Err(anyhow!("{err} (console log: {})", kept.display()))
        }
    }
}

/// Writes command output through; after the first failure (e.g. a closed
/// pipe) the rest of that stream is discarded.
fn relay(out: &mut dyn Write, bytes: &[u8], broken: &mut bool) {
    if *broken {
        return;
    }
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        *broken = true;
    }
}

/// Starts the network `--network`/`-p`/`--add-host` ask for: none by
/// default, passt when ports are published.
fn start_network(
    mode: Option<&str>,
    publish: &[String],
    add_host: &[String],
) -> Result<Option<husk_net::Network>> {
    let mode: husk_net::NetworkMode = match mode {
        Some(m) => m.parse()?,
        None if publish.is_empty() => husk_net::NetworkMode::None,
        None => husk_net::NetworkMode::User,
    };
    if mode == husk_net::NetworkMode::None && publish.is_empty() {
        return Ok(None);
    }
    let mut ports = Vec::new();
    for p in publish {
        ports.extend(husk_net::parse_port_spec(p)?);
    }
    let extra_hosts = add_host
        .iter()
        .map(|h| h.parse())
        .collect::<Result<Vec<husk_net::ExtraHost>, _>>()?;
    let ephemeral = ports.iter().any(|p| p.host_port == 0);
    let network = husk_net::Network::start(husk_net::NetworkOptions {
        mode,
        ports,
        extra_hosts,
        // For tests and unusual installs.
        passt: std::env::var_os("HUSK_PASST").map(PathBuf::from),
        ..Default::default()
    })?;
    if ephemeral {
        for p in network.ports() {
            eprintln!("husk: publishing {p}");
        }
    }
    Ok(Some(network))
}

/// Parses `PATH[:ro]` and checks that the image exists.
fn parse_disk(spec: &str) -> Result<Disk> {
    let (path, read_only) = match spec.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        _ => (spec, false),
    };
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path).with_context(|| format!("disk {}", path.display()))?;
    if meta.is_dir() {
        bail!("disk {} is a directory, not an image", path.display());
    }
    Ok(Disk { path, read_only })
}

/// The root disk request for the first user disk; the filesystem type is
/// read from its superblock.
fn root_disk(disk: &Disk) -> Result<RootDisk> {
    let fs_type = detect_fs(&disk.path)?;
    Ok(RootDisk {
        serial: "disk0".into(),
        fs_type: fs_type.into(),
        read_only: disk.read_only || fs_type == "erofs",
    })
}

/// Recognises ext2/3/4 and EROFS images.
fn detect_fs(path: &Path) -> Result<&'static str> {
    let mut sb = [0u8; 1024];
    let mut file = File::open(path).with_context(|| format!("disk {}", path.display()))?;
    file.seek(SeekFrom::Start(1024))
        .and_then(|_| file.read_exact(&mut sb))
        .with_context(|| format!("disk {}: too small for a filesystem", path.display()))?;
    if sb[0..4] == 0xE0F5_E1E2u32.to_le_bytes() {
        return Ok("erofs");
    }
    if sb[0x38..0x3a] == 0xEF53u16.to_le_bytes() {
        return Ok("ext4");
    }
    bail!(
        "disk {}: no ext4 or EROFS filesystem found for the root",
        path.display()
    )
}

/// The command's environment: a default PATH and HOME, then `-e` flags.
fn environment(flags: &[String]) -> Vec<String> {
    let mut env = vec![
        format!(
            "PATH={}",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
        "HOME=/root".to_string(),
    ];
    for flag in flags {
        let entry = match flag.split_once('=') {
            Some(_) => flag.clone(),
            None => match std::env::var(flag) {
                Ok(v) => format!("{flag}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    env
}

/// Fails with a clear message when KVM is missing or not accessible.
fn check_kvm() -> Result<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("/dev/kvm does not exist: KVM is required (load kvm, or enable nested virtualization)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("/dev/kvm: permission denied (add the user to the kvm group)")
        }
        Err(e) => bail!("/dev/kvm: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::write(&img, [0u8; 4096]).unwrap();
        let d = parse_disk(&format!("{}:ro", img.display())).unwrap();
        assert!(d.read_only);
        assert_eq!(d.path, img);
        assert!(!parse_disk(img.to_str().unwrap()).unwrap().read_only);
        let err = format!("{:#}", parse_disk("/no/such.img").unwrap_err());
        assert!(
            err.contains("/no/such.img") && err.contains("No such file"),
            "{err}"
        );
        let err = format!("{:#}", detect_fs(&img).unwrap_err());
        assert!(err.contains("no ext4 or EROFS"), "{err}");
    }

    #[test]
    fn env_flags_override_defaults() {
        let env = environment(&[
            "PATH=/x".into(),
            "A=1".into(),
            "HUSK_SURELY_UNSET_VAR".into(),
        ]);
        assert_eq!(env, ["HOME=/root", "PATH=/x", "A=1"]);
    }
}
