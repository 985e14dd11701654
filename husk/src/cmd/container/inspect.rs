//! `husk inspect`: containers as Docker-shaped JSON, or one value with
//! `--format '{{.State.Status}}'`.

use anyhow::Result;
use clap::Args;
use husk_runtime::security::ulimit_value;
use husk_runtime::{CapFlag, Container, ContainerConfig, Status};
use serde_json::{json, Value};

use super::{each, RootArgs};

/// `husk inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print one value per container: a Go-template path such as
    /// {{.State.ExitCode}} or {{.Config.Env}}.
    #[arg(short = 'f', long)]
    format: Option<String>,
    #[command(flatten)]
    root: RootArgs,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `husk inspect`.
pub fn inspect(a: InspectArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let mut docs = Vec::new();
    let code = each(&a.containers, |n| {
        docs.push(document(&rt.container(n)?));
        Ok(())
    });
    match &a.format {
        Some(f) => {
            for d in &docs {
                println!("{}", render(f, d));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(docs))?),
    }
    Ok(code)
}

/// The Docker-shaped document of a container.
fn document(c: &Container) -> Value {
    let cfg = &c.config;
    let s = &c.state;
    let zero = "0001-01-01T00:00:00Z";
    let binds = cfg.binds.iter().map(|b| {
        json!({
            "Type": "bind",
            "Source": b.source,
            "Destination": b.target,
            "Mode": if b.read_only { "ro" } else { "" },
            "RW": !b.read_only,
            "Propagation": "rprivate",
        })
    });
    let mounts: Vec<Value> = cfg
        .mounts
        .iter()
        .map(|m| {
            json!({
                "Type": "volume",
                "Name": m.name,
                "Destination": m.target,
                "Driver": "local",
                "RW": !m.read_only,
            })
        })
        .chain(binds)
        .collect();
    let volumes: serde_json::Map<String, Value> = cfg
        .mounts
        .iter()
        .map(|m| (m.target.clone(), json!({})))
        .collect();
    json!({
        "Id": cfg.id,
        "Created": cfg.created,
        "Path": cfg.process.argv.first(),
        "Args": cfg.process.argv.get(1..).unwrap_or(&[]),
        "State": {
            "Status": s.status_word(),
            "Running": s.status == Status::Running,
            "Paused": s.paused,
            "Restarting": s.restarting,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": s.pid.unwrap_or(0),
            "MonitorPid": s.monitor.map_or(0, |m| m.pid),
            "ExitCode": s.exit_code.unwrap_or(0),
            "Error": s.error.clone().unwrap_or_default(),
            "StartedAt": s.started_at.as_deref().unwrap_or(zero),
            "FinishedAt": s.finished_at.as_deref().unwrap_or(zero),
            "Template": s.template.clone().unwrap_or_default(),
            "Jail": s.jail,
            "Health": c.config.health.as_ref().map(|_| {
                husk_runtime::health::Health::read(&c.paths)
            }),
        },
        "Image": cfg.image_id,
        "Name": format!("/{}", cfg.name),
        "RestartCount": s.restart_count,
        "LogPath": c.paths.log(),
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.process.user,
            "Tty": cfg.process.tty,
            "OpenStdin": cfg.process.stdin,
            "Env": cfg.process.env,
            "Cmd": cfg.process.argv,
            "Image": cfg.image,
            "Volumes": volumes,
            "WorkingDir": cfg.process.cwd,
            "StopSignal": cfg.stop_signal.to_string(),
            "StopTimeout": cfg.stop_timeout,
            "Labels": cfg.labels,
        },
        "HostConfig": with_run_flags(host_config(cfg), cfg),
        "NetworkSettings": { "Ports": published(c) },
        "Husk": {
            "Kernel": cfg.kernel,
            "Layers": cfg.layers,
            "WritableDisk": c.paths.rw_disk(),
            "ConsoleLog": c.paths.console(),
        },
    })
}

/// Docker's `HostConfig`: resources, ports and the security flags as
/// given (empty lists are `null`, as Docker prints them).
fn host_config(cfg: &ContainerConfig) -> Value {
    let sec = &cfg.security_flags;
    let list = |items: Vec<Value>| {
        if items.is_empty() {
            Value::Null
        } else {
            Value::Array(items)
        }
    };
    let names = |caps: &[CapFlag]| list(caps.iter().map(|c| json!(c.to_string())).collect());
    let ulimits = sec
        .ulimits
        .iter()
        .map(|l| {
            json!({
                "Name": l.resource.docker_name(),
                "Soft": ulimit_value(l.soft),
                "Hard": ulimit_value(l.hard),
            })
        })
        .collect();
    json!({
        "Memory": u64::from(cfg.memory_mib) << 20,
        "NanoCpus": u64::from(cfg.cpus) * 1_000_000_000,
        "AutoRemove": cfg.auto_remove,
        "PortBindings": port_map(&cfg.ports, false),
        "ExtraHosts": list(cfg.extra_hosts.iter().map(|h| json!(h.to_string())).collect()),
        "Runtime": "husk",
        "RestartPolicy": {
            "Name": cfg.restart_policy.to_string(),
            "MaximumRetryCount": cfg.restart_policy.max_retries(),
        },
        "CapAdd": names(&sec.cap_add),
        "CapDrop": names(&sec.cap_drop),
        "Privileged": sec.privileged,
        "Ulimits": list(ulimits),
        "SecurityOpt": list(sec.security_opt().into_iter().map(Value::String).collect()),
        "GroupAdd": list(sec.group_add.iter().map(|g| json!(g.to_string())).collect()),
        // husk's rate limits (0: unlimited): per disk, reads plus writes;
        // network, each way.
        "DiskBps": cfg.io_limits.disk_bps,
        "DiskIops": cfg.io_limits.disk_iops,
        "NetworkBps": cfg.io_limits.net_bps,
        "LogConfig": {
            "Type": "json-file",
            "Config": cfg
                .log_config
                .docker_opts()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        },
    })
}

/// `HostConfig` entries of the run flags (`--dns*`, `--read-only`,
/// `--init`, `--shm-size`, `--tmpfs`), as Docker names them.
fn with_run_flags(mut hc: Value, cfg: &ContainerConfig) -> Value {
    let f = &cfg.run_flags;
    let strings = |v: Vec<String>| json!(v);
    let tmpfs: serde_json::Map<String, Value> = cfg
        .tmpfs
        .iter()
        .filter(|t| f.shm_size.is_none() || t.target != "/dev/shm")
        .map(|t| {
            let mut opts = vec![if t.read_only { "ro" } else { "rw" }.to_string()];
            for (on, name) in [
                (t.nosuid, "nosuid"),
                (t.nodev, "nodev"),
                (t.noexec, "noexec"),
            ] {
                if on {
                    opts.push(name.into());
                }
            }
            opts.extend(t.size.as_ref().map(|s| format!("size={s}")));
            opts.extend(t.mode.map(|m| format!("mode={m:o}")));
            (t.target.clone(), json!(opts.join(",")))
        })
        .collect();
    let extra = json!({
        "Dns": strings(f.dns.servers.iter().map(ToString::to_string).collect()),
        "DnsSearch": f.dns.search,
        "DnsOptions": f.dns.options,
        "ReadonlyRootfs": f.read_only,
        "Init": f.init,
        "ShmSize": f.shm_size.unwrap_or(64 << 20),
        "Tmpfs": if tmpfs.is_empty() { Value::Null } else { Value::Object(tmpfs) },
    });
    if let (Value::Object(hc), Value::Object(extra)) = (&mut hc, extra) {
        hc.extend(extra);
    }
    hc
}

/// Replaces `{{.A.B}}` paths (and `{{json .A}}`) with values from `doc`;
/// strings print bare, everything else as JSON.
pub fn render(format: &str, doc: &Value) -> String {
    super::format::expand(format, &|inner| {
        let (as_json, path) = match inner.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, inner),
        };
        let mut v = doc;
        for key in path
            .trim_start_matches('.')
            .split('.')
            .filter(|k| !k.is_empty())
        {
            v = v.get(key).unwrap_or(&Value::Null);
        }
        match v {
            Value::String(s) if !as_json => s.clone(),
            Value::Null if !as_json => "<no value>".into(),
            other => other.to_string(),
        }
    })
}

/// Docker's `NetworkSettings.Ports` of a running container:
/// `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
fn published(c: &husk_runtime::Container) -> serde_json::Value {
    if c.state.status.can_exec() {
        port_map(&c.state.ports, true)
    } else {
        serde_json::json!({})
    }
}

/// Docker's port map: the requested `PortBindings` (an unset address or
/// port is `""`), or the `bound` `NetworkSettings.Ports` (`0.0.0.0`).
fn port_map(ports: &[husk_net::PortMapping], bound: bool) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for p in ports {
        let (ip, port) = match (bound, p.host_ip, p.host_port) {
            (true, _, _) => (p.host_addr().ip().to_string(), p.host_port.to_string()),
            (false, ip, port) => (
                ip.map(|ip| ip.to_string()).unwrap_or_default(),
                if port == 0 {
                    String::new()
                } else {
                    port.to_string()
                },
            ),
        };
        let entry = serde_json::json!({ "HostIp": ip, "HostPort": port });
        if let serde_json::Value::Array(list) = out
            .entry(format!("{}/{}", p.container_port, p.proto))
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            list.push(entry);
        }
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = json!({"State": {"Status": "running", "ExitCode": 3}, "Config": {"Env": ["A=1"]}});
        assert_eq!(
            render("{{.State.Status}} {{.State.ExitCode}}", &d),
            "running 3"
        );
        assert_eq!(render("{{json .Config.Env}}", &d), "[\"A=1\"]");
        assert_eq!(render("{{.Nope.X}}", &d), "<no value>");
    }

    fn config(security_flags: serde_json::Value) -> ContainerConfig {
        serde_json::from_value(json!({
            "id": "0".repeat(64), "name": "c", "created": "", "image": "i", "image_id": "",
            "layers": [], "hostname": "h", "cpus": 1, "memory_mib": 256,
            "stop_signal": 15, "stop_timeout": 10, "auto_remove": false,
            "kernel": "/k", "agent_disk": "/a", "boot_timeout": 90,
            "process": {
                "argv": ["sh"], "env": [], "cwd": "/", "user": "", "tty": false, "stdin": false
            },
            "security_flags": security_flags,
        }))
        .unwrap()
    }

    #[test]
    fn host_config_shows_the_security_flags_as_docker_does() {
        let cfg = config(json!({
            "cap_add": ["CAP_NET_BIND_SERVICE"],
            "cap_drop": ["ALL"],
            "ulimits": [
                {"resource": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
                {"resource": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX},
            ],
            "no_new_privileges": true,
            "group_add": [4321],
        }));
        let hc = host_config(&cfg);
        assert_eq!(hc["CapAdd"], json!(["CAP_NET_BIND_SERVICE"]));
        assert_eq!(hc["CapDrop"], json!(["ALL"]));
        assert_eq!(hc["Privileged"], json!(false));
        assert_eq!(
            render("{{json .Ulimits}}", &hc),
            r#"[{"Hard":200,"Name":"nofile","Soft":100},{"Hard":-1,"Name":"core","Soft":-1}]"#
        );
        assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]));
        assert_eq!(hc["GroupAdd"], json!(["4321"]));
        // A container created without them (or before they existed).
        let hc = host_config(&config(json!({})));
        for key in ["CapAdd", "CapDrop", "Ulimits", "SecurityOpt", "GroupAdd"] {
            assert_eq!(hc[key], Value::Null, "{key}");
        }
        assert_eq!(hc["Privileged"], json!(false));
        assert_eq!(
            render("{{json .LogConfig}}", &hc),
            r#"{"Config":{"max-file":"5","max-size":"20m"},"Type":"json-file"}"#
        );
        let hc = host_config(&config(json!({"privileged": true})));
        assert_eq!(hc["Privileged"], json!(true));
    }

    #[test]
    fn host_config_shows_the_rate_limits() {
        let hc = host_config(&config(json!({})));
        assert_eq!(
            (&hc["DiskBps"], &hc["DiskIops"], &hc["NetworkBps"]),
            (&json!(0), &json!(0), &json!(0)),
            "unlimited"
        );
        let mut cfg = config(json!({}));
        cfg.io_limits = husk_runtime::config::IoLimits {
            disk_bps: 1 << 20,
            disk_iops: 100,
            net_bps: 512 << 10,
        };
        // Stored and read back as config.json does.
        let cfg: ContainerConfig =
            serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        let hc = host_config(&cfg);
        assert_eq!(hc["DiskBps"], json!(1 << 20));
        assert_eq!(hc["DiskIops"], json!(100));
        assert_eq!(hc["NetworkBps"], json!(512 << 10));
    }
}
