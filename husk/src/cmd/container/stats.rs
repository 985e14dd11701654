//! `husk stats` and `husk top`. Where each figure comes from: CPU % is the
//! VMM process's CPU time (all its threads, the vCPUs' included; host
//! side); MEM USAGE is the guest kernel's `MemTotal − MemAvailable` and
//! LIMIT the VM's memory (guest side; the VMM's resident memory is the
//! JSON field `VMMRSS`, host side); NET I/O and BLOCK I/O are the guest
//! kernel's interface and virtio-disk byte counters, PIDS the guest's
//! processes (guest side, through the agent).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use husk_protocol::GuestProcess;
use husk_runtime::relay::ClientIo;
use husk_runtime::stats::Sample;
use husk_runtime::{ExecOptions, Runtime};
use serde_json::json;

use super::RootArgs;

/// The refresh interval of streaming `stats` (Docker's).
const REFRESH: Duration = Duration::from_secs(1);

const DEFAULT_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// `husk stats` flags.
#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Print one sample and exit.
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Go-template-like format: {{.Name}} {{.CPUPerc}} ..., `table ...`, {{json .}}.
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running).
    containers: Vec<String>,
}

/// One container's row.
struct Row {
    container: String,
    id: String,
    name: String,
    cpu: String,
    mem_usage: String,
    mem_perc: String,
    net: String,
    block: String,
    pids: String,
    vmm_rss: u64,
}

impl Row {
    fn field(&self, f: &str) -> Option<String> {
        Some(match f {
            "Container" => self.container.clone(),
            "ID" => self.id.clone(),
            "Name" => self.name.clone(),
            "CPUPerc" => self.cpu.clone(),
            "MemUsage" => self.mem_usage.clone(),
            "MemPerc" => self.mem_perc.clone(),
            "NetIO" => self.net.clone(),
            "BlockIO" => self.block.clone(),
            "PIDs" => self.pids.clone(),
            "VMMRSS" => bytes_binary(self.vmm_rss),
            "json" => json!({
                "BlockIO": self.block, "CPUPerc": self.cpu, "Container": self.container,
                "ID": self.id, "MemPerc": self.mem_perc, "MemUsage": self.mem_usage,
                "Name": self.name, "NetIO": self.net, "PIDs": self.pids,
                "VMMRSS": bytes_binary(self.vmm_rss),
            })
            .to_string(),
            _ => return None,
        })
    }
}

fn header(f: &str) -> &str {
    match f {
        "Container" => "CONTAINER",
        "ID" => "CONTAINER ID",
        "Name" => "NAME",
        "CPUPerc" => "CPU %",
        "MemUsage" => "MEM USAGE / LIMIT",
        "MemPerc" => "MEM %",
        "NetIO" => "NET I/O",
        "BlockIO" => "BLOCK I/O",
        "PIDs" => "PIDS",
        "VMMRSS" => "VMM RSS",
        other => other,
    }
}

/// Go's `%.4g`, trailing zeros dropped (go-units' precision).
fn g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (4 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    format!("{}{}", g4(v), units[i])
}

/// go-units' `BytesSize` (binary units), as Docker prints memory.
pub fn bytes_binary(b: u64) -> String {
    scaled(b, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// go-units' `HumanSize` (decimal units), as Docker prints I/O.
fn bytes_decimal(b: u64) -> String {
    scaled(b, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

/// The previous CPU reading of each container: (VMM CPU ns, when).
type CpuSeen = HashMap<String, (u64, Instant)>;

fn row(
    name: &str,
    c: &husk_runtime::Container,
    s: &Sample,
    trunc: bool,
    seen: &mut CpuSeen,
) -> Row {
    let now = Instant::now();
    let cpu_ns = s.vmm.map_or(0, |v| v.cpu_ns);
    // The first reading: the average since the container started.
    let (before_ns, elapsed) = match seen.get(c.id.as_str()) {
        Some(&(ns, at)) => (ns, now.duration_since(at).as_secs_f64()),
        None => (
            0,
            c.state
                .started_at
                .as_deref()
                .map_or(0, husk_runtime::time::secs_since) as f64,
        ),
    };
    seen.insert(c.id.to_string(), (cpu_ns, now));
    let cpu = if elapsed > 0.0 {
        cpu_ns.saturating_sub(before_ns) as f64 / 1e9 / elapsed * 100.0
    } else {
        0.0
    };
    let g = &s.guest;
    let used = g.mem_total.saturating_sub(g.mem_available);
    let mem_perc = if s.memory_limit > 0 {
        used as f64 / s.memory_limit as f64 * 100.0
    } else {
        0.0
    };
    Row {
        container: name.to_string(),
        id: if trunc {
            c.id.short().to_string()
        } else {
            c.id.to_string()
        },
        name: c.config.name.clone(),
        cpu: format!("{cpu:.2}%"),
        mem_usage: format!("{} / {}", bytes_binary(used), bytes_binary(s.memory_limit)),
        mem_perc: format!("{mem_perc:.2}%"),
        net: format!("{} / {}", bytes_decimal(g.net_rx), bytes_decimal(g.net_tx)),
        block: format!(
            "{} / {}",
            bytes_decimal(g.block_read),
            bytes_decimal(g.block_written)
        ),
        pids: g.pids.to_string(),
        vmm_rss: s.vmm.map_or(0, |v| v.rss),
    }
}

/// A running container's row; a stopped one's is all zeros (as Docker's).
fn sample_row(rt: &Runtime, name: &str, trunc: bool, seen: &mut CpuSeen) -> Result<Row> {
    let c = rt.container(name)?;
    let sample = if c.state.status.can_exec() {
        rt.stats(name)?
    } else {
        Sample {
            vmm: None,
            guest: Default::default(),
            memory_limit: 0,
            vcpus: 0,
        }
    };
    Ok(row(name, &c, &sample, trunc, seen))
}

/// `husk stats`.
pub fn stats(a: StatsArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let format = a.format.clone().unwrap_or_else(|| DEFAULT_FORMAT.into());
    let mut seen = CpuSeen::new();
    let names = |rt: &Runtime| -> Result<Vec<String>> {
        if !a.containers.is_empty() {
            return Ok(a.containers.clone());
        }
        Ok(rt
            .list()?
            .into_iter()
            .filter(|c| a.all || c.state.status.can_exec())
            .map(|c| c.config.name)
            .collect())
    };
    loop {
        let mut rows = Vec::new();
        for n in names(&rt)? {
            match sample_row(&rt, &n, !a.no_trunc, &mut seen) {
                Ok(r) => rows.push(r),
                // A container named on the command line must exist.
                Err(e) if !a.containers.is_empty() => bail!(e),
                Err(_) => {}
            }
        }
        if !a.no_stream {
            // Docker's screen refresh: clear, home.
            print!("\x1b[2J\x1b[H");
        }
        super::format::print_rows(&format, &rows, header, Row::field);
        if a.no_stream {
            return Ok(0);
        }
        // The product's refresh interval; SIGINT ends the command.
        std::thread::sleep(REFRESH);
    }
}

/// `husk top` flags.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct TopArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The container.
    container: String,
    /// `ps` options: run the image's `ps` with them in the container.
    #[arg(allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

/// `husk top`: the guest's processes as `ps -ef` prints them, from the
/// agent; with `ps` options, the image's own `ps` run in the container
/// (Docker runs the host's `ps` on the container's processes instead).
pub fn top(a: TopArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    if !a.ps_options.is_empty() {
        let mut argv = vec!["ps".to_string()];
        argv.extend(a.ps_options.iter().cloned());
        let opts = ExecOptions {
            argv,
            ..Default::default()
        };
        let io = ClientIo {
            stdin: None,
            stdout: rustix::stdio::stdout(),
            stderr: rustix::stdio::stderr(),
            signals: None,
            tty: None,
            forward_signals: false,
        };
        let outcome = rt.exec(&a.container, &opts, &io)?;
        return Ok(outcome.exit_code().unwrap_or(1));
    }
    let c = rt.container(&a.container)?;
    if !c.state.status.can_exec() {
        bail!("container {} is not running", a.container);
    }
    let procs = rt.top(&a.container)?;
    let now = husk_runtime::time::now_nanos()
        .div_euclid(1_000_000_000)
        .max(0) as u64;
    let mut table = vec![["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    table.extend(procs.iter().map(|p| ps_row(p, now)));
    crate::cmd::image::output::print_table(&table);
    Ok(0)
}

/// One `ps -ef` line.
fn ps_row(p: &GuestProcess, now: u64) -> Vec<String> {
    let elapsed_ms = now.saturating_sub(p.start_time).saturating_mul(1000);
    let c = p
        .cpu_ms
        .saturating_mul(100)
        .checked_div(elapsed_ms)
        .unwrap_or(0);
    let secs = p.cpu_ms / 1000;
    vec![
        if p.uid == 0 {
            "root".into()
        } else {
            p.uid.to_string()
        },
        p.pid.to_string(),
        p.ppid.to_string(),
        c.to_string(),
        start_time(p.start_time, now),
        p.tty.clone(),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        p.cmd.clone(),
    ]
}

/// `ps`'s STIME (UTC): `HH:MM` within a day, else `MonDD`.
fn start_time(start: u64, now: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // YYYY-MM-DDTHH:MM:SSZ
    let t = images::time::format_rfc3339(start as i64);
    if now.saturating_sub(start) < 86_400 {
        return t.get(11..16).unwrap_or("?").to_string();
    }
    let month = t
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(1);
    format!(
        "{}{}",
        MONTHS[month.clamp(1, 12) - 1],
        t.get(8..10).unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_docker_does() {
        assert_eq!(bytes_binary(0), "0B");
        assert_eq!(bytes_binary(1536), "1.5KiB");
        assert_eq!(bytes_binary(512 << 20), "512MiB");
        assert_eq!(bytes_decimal(648), "648B");
        assert_eq!(bytes_decimal(1234), "1.234kB");
        assert_eq!(g4(12.3456), "12.35");
    }

    #[test]
    fn ps_rows_have_the_ef_columns() {
        let p = GuestProcess {
            pid: 7,
            ppid: 1,
            uid: 0,
            start_time: 1000,
            cpu_ms: 61_000,
            tty: "?".into(),
            cmd: "sleep 1000".into(),
        };
        let r = ps_row(&p, 1100);
        assert_eq!(r[0], "root");
        assert_eq!(r[1], "7");
        assert_eq!(r[6], "00:01:01");
        assert_eq!(r[7], "sleep 1000");
        assert_eq!(start_time(1_700_000_000, 1_700_000_100), "22:13");
        assert_eq!(start_time(1_700_000_000, 1_800_000_000), "Nov14");
    }
}
