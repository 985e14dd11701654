//! `husk create` and `husk run`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_runtime::config::IoLimits;
use husk_runtime::health::HealthFlags;
use husk_runtime::logs::LogConfig;
use husk_runtime::security::RawSecurityFlags;
use husk_runtime::{CreateOptions, Runtime, SecurityFlags, StdioWiring};

use super::interactive::{self, LocalStdio};
use super::RootArgs;
use crate::cmd::flags;
use crate::cmd::mount_flag::{self, MountFlag};
use husk_net::NetworkMode;
use husk_sandbox::{assets, StartMode};

/// Flags shared by `create` and `run`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy husk's).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Container hostname (default: the short ID).
    #[arg(long)]
    hostname: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    tty: bool,
    /// Memory of the container's VM (e.g. 512m, 1g).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPUs of the container's VM (rounded up to whole vCPUs).
    #[arg(long)]
    cpus: Option<String>,
    /// Limit each of the container's disks to RATE bytes per second, reads
    /// plus writes (e.g. 512k, 10m; default: unlimited).
    #[arg(long = "disk-bps", value_name = "RATE")]
    disk_bps: Option<String>,
    /// Limit each of the container's disks to N read and write requests
    /// per second (default: unlimited).
    #[arg(long = "disk-iops", value_name = "N")]
    disk_iops: Option<u64>,
    /// Limit the container's network to RATE bytes per second each way
    /// (e.g. 1m; default: unlimited).
    #[arg(long = "net-bps", value_name = "RATE")]
    net_bps: Option<String>,
    /// Volumes and bind mounts: NAME:/path[:ro], /path (an anonymous
    /// volume), /host/path:/path[:ro] or ./rel:/path (shared over virtio-fs).
    #[arg(short = 'v', long = "volume", value_name = "VOLUME")]
    volumes: Vec<String>,
    /// Attach a filesystem: type=bind|volume|tmpfs,source=..,target=..[,readonly]
    /// (tmpfs: tmpfs-size=SIZE, tmpfs-mode=OCTAL).
    #[arg(long = "mount", value_name = "MOUNT")]
    mounts: Vec<String>,
    /// Publish container ports: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO].
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// Publish the image's exposed ports on free host ports.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Network: passt (default: outbound access and published ports),
    /// none (loopback only), tap or tap:NAME (root).
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Add a line to /etc/hosts: NAME:IP; NAME:host-gateway names the host
    /// and is what lets the container reach it (blocked otherwise).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Signal to stop the container (default: the image's, else SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Add a Linux capability to Docker's default set (NAME, CAP_NAME or
    /// ALL); applied after the --cap-drop flags.
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability from Docker's default set (NAME, CAP_NAME
    /// or ALL).
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Give the container's processes every capability. No host device
    /// is passed in: the VM only has its own devices.
    #[arg(long)]
    privileged: bool,
    /// Set a resource limit: NAME=SOFT[:HARD] (e.g. nofile=1024:4096; the
    /// hard limit defaults to the soft one; -1 or unlimited for none).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// Security options: no-new-privileges[=true|false] (set-user-ID
    /// programs and file capabilities grant nothing).
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Add a supplementary group to the container's processes (a numeric
    /// GID).
    #[arg(long = "group-add", value_name = "GID")]
    group_add: Vec<String>,
    /// Log rotation of the json-file log: max-size=SIZE (k, m, g) and
    /// max-file=N (with max-size). Default: max-size=20m, max-file=5.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opts: Vec<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Restart policy: no, always, unless-stopped, on-failure[:max-retries].
    #[arg(long, default_value = "no")]
    restart: String,
    /// Command to run to check health.
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long = "health-interval")]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long = "health-timeout")]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long = "health-retries")]
    health_retries: Option<u32>,
    /// Start period for the container to initialize before failures count (ms|s|m|h).
    #[arg(long = "health-start-period")]
    health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// Guest kernel (vmlinux); default: $HUSK_KERNEL, then the installed one.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Seconds the VM may take to boot.
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
    #[command(flatten)]
    root: RootArgs,
    #[command(flatten)]
    run_flags: super::run_flags::RunFlagArgs,
    /// The image.
    image: String,
    /// The command and its arguments (default: the image's).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// `husk run` flags.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Forward signals husk receives to the container's process (non-TTY).
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    #[command(flatten)]
    create: CreateArgs,
}

/// The library's options from the flags (assets resolved here).
fn options(a: &CreateArgs) -> Result<CreateOptions> {
    let security_flags = security_flags(a)?;
    let log_config = LogConfig::from_opts(&a.log_opts)?;
    let mut env = flags::env_files(&a.env_file)?;
    env.extend(flags::env_flags(&a.env));
    let mut volumes = a
        .volumes
        .iter()
        .map(|v| flags::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extra = a.run_flags.parse()?;
    for m in &a.mounts {
        match mount_flag::parse_mount(m)? {
            MountFlag::Volume(v) => volumes.push(v),
            MountFlag::Tmpfs(t) => extra.tmpfs.push(t),
        }
    }
    let network: NetworkMode = a.network.as_deref().unwrap_or_default().parse()?;
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.extend(husk_net::parse_port_spec(p)?);
    }
    let extra_hosts = a
        .add_host
        .iter()
        .map(|h| h.parse())
        .collect::<Result<Vec<husk_net::ExtraHost>, _>>()?;
    let stop_signal = a.stop_signal.as_deref().map(str::parse).transpose()?;
    let kernel = assets::kernel(a.kernel.as_deref())?;
    let agent = assets::agent()?;
    let agent_disk = assets::agent_disk(&agent, &assets::cache_dir())?;
    Ok(CreateOptions {
        image: a.image.clone(),
        name: a.name.clone(),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        cmd: a.command.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        stdin: a.interactive,
        cpus: a.cpus.as_deref().map(flags::parse_cpus).transpose()?,
        memory_mib: a.memory.as_deref().map(flags::parse_memory).transpose()?,
        volumes,
        stop_signal,
        stop_timeout: a.stop_timeout,
        auto_remove: a.rm,
        ports,
        publish_all: a.publish_all,
        network,
        extra_hosts,
        kernel,
        agent_disk,
        boot_timeout: a.boot_timeout,
        start: StartMode::choose(a.cold),
        security: security_flags.process_security(),
        security_flags,
        log_config,
        io_limits: IoLimits {
            disk_bps: a
                .disk_bps
                .as_deref()
                .map(flags::parse_rate)
                .transpose()?
                .unwrap_or(0),
            disk_iops: a.disk_iops.unwrap_or(0),
            net_bps: a
                .net_bps
                .as_deref()
                .map(flags::parse_rate)
                .transpose()?
                .unwrap_or(0),
        },
        restart_policy: a.restart.parse()?,
        health: HealthFlags {
            cmd: a.health_cmd.clone(),
            interval: duration("--health-interval", &a.health_interval)?,
            timeout: duration("--health-timeout", &a.health_timeout)?,
            retries: a.health_retries,
            start_period: duration("--health-start-period", &a.health_start_period)?,
            none: a.no_healthcheck,
        },
        labels: extra.labels,
        tmpfs: extra.tmpfs,
        run_flags: extra.run_flags,
    })
}

/// A Go duration flag (`30s`, `1m30s`, `500ms`).
fn duration(flag: &str, v: &Option<String>) -> Result<Option<Duration>> {
    let Some(v) = v else {
        return Ok(None);
    };
    let ns = husk_runtime::events::parse_duration(v)
        .and_then(|n| u64::try_from(n).ok())
        .with_context(|| {
            format!("invalid argument {v:?} for \"{flag}\" flag: time: invalid duration")
        })?;
    Ok(Some(Duration::from_nanos(ns)))
}

/// The typed security flags (`--cap-add`, `--cap-drop`, `--privileged`,
/// `--ulimit`, `--security-opt`, `--group-add`).
fn security_flags(a: &CreateArgs) -> Result<SecurityFlags> {
    Ok(SecurityFlags::parse(RawSecurityFlags {
        cap_add: &a.cap_add,
        cap_drop: &a.cap_drop,
        privileged: a.privileged,
        ulimits: &a.ulimits,
        security_opts: &a.security_opt,
        group_add: &a.group_add,
    })?)
}

/// Creates the container; the image is looked up first, so a missing one
/// is reported before anything else.
fn create_container(rt: &Runtime, a: &CreateArgs) -> Result<husk_runtime::ContainerId> {
    a.run_flags.check_cidfile()?;
    rt.image_store()?.resolve(&a.image)?;
    let id = rt.create(options(a)?)?;
    a.run_flags.write_cidfile(id.as_str())?;
    Ok(id)
}

/// `husk create`: prints the new container's ID.
pub fn create(a: CreateArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let id = create_container(&rt, &a)?;
    println!("{id}");
    Ok(0)
}

/// `husk run`.
pub fn run(a: RunArgs) -> Result<i32> {
    let c = &a.create;
    if c.interactive && c.tty && !interactive::stdin_is_terminal() {
        bail!("the input device is not a TTY");
    }
    let rt = super::runtime(&c.root)?;
    let id = create_container(&rt, c)?;
    let started = if a.detach {
        start_or_report(&rt, id.as_str(), StdioWiring::Detached).map(|()| {
            println!("{id}");
            0
        })
    } else {
        let attached = LocalStdio {
            stdin: c.interactive,
            tty: c.tty,
            sig_proxy: a.sig_proxy,
        };
        interactive::start_attached(&rt, id.as_str(), &attached)
    };
    if started.is_err() && c.rm {
        // A container that never ran (a host port in use...) is removed
        // as --rm asks; one that runs is left to its monitor.
        let _ = rt.delete(id.as_str(), husk_runtime::DeleteOptions::default());
    }
    started
}

/// Starts a container; a process that could not start is reported with
/// Docker's exit code (126, 127...) as the error.
pub fn start_or_report(rt: &Runtime, id: &str, stdio: StdioWiring) -> Result<()> {
    match rt.start(id, stdio) {
        Ok(()) => Ok(()),
        Err(husk_runtime::Error::Exec { code, detail }) => {
            Err(interactive::ExitWith { code, detail }.into())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use husk_protocol::{Capabilities, RlimitResource};
    use husk_runtime::CapFlag;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<SecurityFlags> {
        let argv = ["husk"].iter().chain(args).chain(&["img", "sh"]);
        security_flags(&Cli::try_parse_from(argv).unwrap().run.create)
    }

    #[test]
    fn security_flags_are_typed() {
        let flags = parse(&[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_BIND_SERVICE",
            "--cap-add=cap_kill",
            "--ulimit",
            "nofile=100:200",
            "--security-opt",
            "no-new-privileges",
            "--group-add",
            "4321",
        ])
        .unwrap();
        assert_eq!(flags.cap_drop, [CapFlag::All]);
        assert_eq!(
            flags.cap_add,
            ["CAP_NET_BIND_SERVICE", "CAP_KILL"].map(|c| CapFlag::Cap(c.parse().unwrap()))
        );
        assert_eq!(flags.ulimits[0].resource, RlimitResource::RlimitNofile);
        assert_eq!((flags.ulimits[0].soft, flags.ulimits[0].hard), (100, 200));
        let sec = flags.process_security();
        assert_eq!(
            sec.capabilities,
            Some(Capabilities::from_mask(1 << 10 | 1 << 5))
        );
        assert_eq!(sec.additional_gids, [4321]);
        assert!(sec.no_new_privileges);

        let none = parse(&[]).unwrap();
        assert_eq!(none, SecurityFlags::default());
        let privileged = parse(&["--privileged"]).unwrap();
        assert_eq!(
            privileged.process_security().capabilities,
            Some(Capabilities::all())
        );
    }

    #[test]
    fn bad_security_flags_are_one_line_errors() {
        for (args, want) in [
            (
                ["--security-opt", "seccomp=unconfined"],
                "unsupported --security-opt \"seccomp=unconfined\"",
            ),
            (["--cap-add", "NOPE"], "invalid capability \"NOPE\""),
            (
                ["--ulimit", "nofile=2:1"],
                "invalid --ulimit \"nofile=2:1\"",
            ),
            (["--group-add", "staff"], "invalid --group-add \"staff\""),
        ] {
            let err = format!("{:#}", parse(&args).unwrap_err());
            assert!(err.starts_with(want), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
