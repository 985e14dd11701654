//! The host's questions about a running container (protocol 9): the
//! guest's own figures for `husk stats`, its processes for `husk top` and
//! the container's changes to its image for `husk diff`. Everything here
//! reads the guest's /proc or the container's disks; nothing runs in the
//! container.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use husk_layertar::upper::RUNTIME_PATHS;
use husk_protocol::{Change, ChangeKind, GuestProcess, GuestStats, MAX_TOP_CMD, MAX_TOP_PROCESSES};

/// Clock ticks per second of /proc's times (`USER_HZ`, 100 on Linux).
const TICKS: u64 = 100;

/// The guest's memory, process, network and disk figures.
pub fn guest_stats(proc_dir: &Path) -> GuestStats {
    let meminfo = fs::read_to_string(proc_dir.join("meminfo")).unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib.saturating_mul(1024))
    };
    let (net_rx, net_tx) =
        net_bytes(&fs::read_to_string(proc_dir.join("net/dev")).unwrap_or_default());
    let (block_read, block_written) =
        disk_bytes(&fs::read_to_string(proc_dir.join("diskstats")).unwrap_or_default());
    GuestStats {
        mem_total: field("MemTotal"),
        mem_available: field("MemAvailable"),
        pids: processes(proc_dir).len() as u64,
        net_rx,
        net_tx,
        block_read,
        block_written,
    }
}

/// Received and sent bytes of every interface but loopback
/// (/proc/net/dev).
pub fn net_bytes(dev: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}

/// Read and written bytes of the virtio disks (whole `vd*` devices of
/// /proc/diskstats; sectors are 512 bytes there).
pub fn disk_bytes(stats: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for line in stats.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        let whole = name.starts_with("vd") && name[2..].bytes().all(|b| b.is_ascii_lowercase());
        if !whole {
            continue;
        }
        let sectors = |i: usize| f[i].parse::<u64>().unwrap_or(0).saturating_mul(512);
        read = read.saturating_add(sectors(5));
        written = written.saturating_add(sectors(9));
    }
    (read, written)
}

/// The guest's processes but the agent (pid 1) and kernel threads, by pid.
pub fn processes(proc_dir: &Path) -> Vec<GuestProcess> {
    let boot_time = fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mut pids: Vec<u32> = fs::read_dir(proc_dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids.into_iter()
        .filter(|&pid| pid > 1)
        .filter_map(|pid| process(&proc_dir.join(pid.to_string()), pid, boot_time))
        .take(MAX_TOP_PROCESSES)
        .collect()
}

/// One process from its /proc directory; `None` for a kernel thread or a
/// process that is gone.
fn process(dir: &Path, pid: u32, boot_time: u64) -> Option<GuestProcess> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, fields) = parse_stat(&stat)?;
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = num(1)? as u32;
    // kthreadd (2) and its children are the kernel's threads.
    if pid == 2 || ppid == 2 {
        return None;
    }
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    let mut cmd = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    if cmd.is_empty() {
        cmd = format!("[{comm}]");
    }
    truncate(&mut cmd, MAX_TOP_CMD);
    let ticks = num(11).unwrap_or(0).saturating_add(num(12).unwrap_or(0));
    Some(GuestProcess {
        pid,
        ppid,
        uid,
        start_time: boot_time.saturating_add(num(19).unwrap_or(0) / TICKS),
        cpu_ms: ticks.saturating_mul(1000 / TICKS),
        tty: tty_name(num(4).unwrap_or(0)),
        cmd,
    })
}

/// `comm` and the fields after it of a /proc/PID/stat line (the command
/// name is in parentheses and may hold spaces and parentheses itself).
pub fn parse_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    Some((comm, stat.get(close + 1..)?.split_whitespace().collect()))
}

/// A terminal's name from `tty_nr` as `ps` prints it.
pub fn tty_name(tty_nr: u64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        _ => "?".into(),
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Most directory levels `diff` follows.
const MAX_DEPTH: usize = 256;

/// The container's changes: what its overlayfs `upper` directory holds,
/// against the `lowers` (the image's layers): whiteouts are deletions,
/// entries the image has are changes, the rest additions. `emit` gets
/// them in path order.
pub fn diff(
    upper: &Path,
    lowers: &[PathBuf],
    emit: &mut dyn FnMut(Change) -> io::Result<()>,
) -> io::Result<()> {
    diff_dir(upper, lowers, Path::new(""), 0, emit)
}

fn diff_dir(
    upper: &Path,
    lowers: &[PathBuf],
    rel: &Path,
    depth: usize,
    emit: &mut dyn FnMut(Change) -> io::Result<()>,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("directories nested too deeply"));
    }
    let mut names: Vec<_> = fs::read_dir(upper.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        if RUNTIME_PATHS.iter().any(|s| Path::new(s) == child) {
            continue;
        }
        let m = fs::symlink_metadata(upper.join(&child))?;
        let in_image = lowers
            .iter()
            .any(|l| fs::symlink_metadata(l.join(&child)).is_ok());
        let kind = if m.file_type().is_char_device() && m.rdev() == 0 {
            ChangeKind::Deleted
        } else if in_image {
            ChangeKind::Changed
        } else {
            ChangeKind::Added
        };
        emit(Change {
            kind,
            path: format!("/{}", child.to_string_lossy()),
        })?;
        if m.is_dir() {
            diff_dir(upper, lowers, &child, depth + 1, emit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let (comm, f) = parse_stat("42 (a) b (c)) S 7 42 42 34816 0 0").unwrap();
        assert_eq!(comm, "a) b (c)");
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "7");
        assert_eq!(tty_name(f[4].parse().unwrap()), "pts/0");
        assert_eq!(tty_name(0), "?");
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn net_and_disk_counters_sum_all_but_loopback_and_partitions() {
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 3 0 0 0 0 0 0 500 2 0 0 0 0 0 0\n";
        assert_eq!(net_bytes(dev), (2000, 500));
        let disks = " 254 0 vda 10 0 8 0 4 0 16 0 0 0 0\n 254 1 vda1 10 0 8 0 4 0 16 0 0 0 0\n 7 0 loop0 1 0 99 0 1 0 99 0 0 0 0\n 254 16 vdb 1 0 2 0 1 0 4 0 0 0 0\n";
        assert_eq!(disk_bytes(disks), (10 * 512, 20 * 512));
    }

    #[test]
    fn this_hosts_processes_are_listed_with_their_command_lines() {
        let me = std::process::id();
        let procs = processes(Path::new("/proc"));
        let p = procs.iter().find(|p| p.pid == me).expect("own process");
        assert!(!p.cmd.is_empty());
        assert_eq!(p.uid, rustix::process::getuid().as_raw());
        let stats = guest_stats(Path::new("/proc"));
        assert!(stats.mem_total > 0 && stats.mem_available <= stats.mem_total);
        assert!(stats.pids >= 1);
    }

    #[test]
    fn diff_reports_additions_changes_and_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        let lower = dir.path().join("lower");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(upper.join("etc/new"), "x").unwrap();
        fs::write(upper.join("etc/hosts"), "x").unwrap();
        fs::write(lower.join("etc/passwd"), "x").unwrap();
        fs::write(upper.join("etc/passwd"), "y").unwrap();
        let mut seen = Vec::new();
        diff(&upper, &[lower], &mut |c| {
            seen.push(format!("{} {}", c.kind.letter(), c.path));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["C /etc", "A /etc/new", "C /etc/passwd"]);
    }
}
