//! `--disk-bps`, `--disk-iops`, `--net-bps`: stored, shown by `inspect`,
//! and enforced by the VMM.

use super::csupport::{Env, IMAGE};

/// The disk limit under test, bytes per second.
const DISK_BPS: u64 = 1 << 20;
/// What the guest writes (and syncs) through it.
const WRITTEN: u64 = 6 << 20;

#[test]
fn disk_rate_limit_bounds_a_guest_write() {
    let Some(env) = Env::new("disk_rate_limit_bounds_a_guest_write") else {
        return;
    };
    let err = env.fails(125, &["create", "--disk-bps", "fast", IMAGE, "true"]);
    assert!(err.contains("invalid rate"), "{err}");
    env.ok(&[
        "create",
        "--name",
        "limited",
        "--disk-bps",
        "10m",
        "--disk-iops",
        "100",
        "--net-bps",
        "512k",
        IMAGE,
        "true",
    ]);
    assert_eq!(
        env.inspect(
            "limited",
            "{{.HostConfig.DiskBps}} {{.HostConfig.DiskIops}} {{.HostConfig.NetworkBps}}"
        ),
        format!("{} 100 {}", 10 << 20, 512 << 10)
    );
    env.ok(&["rm", "limited"]);

    // The guest times its own write (boot time excluded) with its uptime.
    let script = format!(
        "a=$(cut -d' ' -f1 /proc/uptime); \
         dd if=/dev/zero of=/data bs=64k count={} conv=fsync 2>/dev/null; \
         b=$(cut -d' ' -f1 /proc/uptime); echo \"$a $b\"",
        WRITTEN / (64 << 10)
    );
    let out = env.ok(&[
        "run",
        "--rm",
        "--disk-bps",
        "1m",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let times: Vec<f64> = out
        .split_whitespace()
        .map(|t| t.parse().expect("uptime"))
        .collect();
    assert_eq!(times.len(), 2, "{out}");
    let took = times[1] - times[0];
    // The bucket starts with one second's worth; the rest waits for the
    // limit. A lower bound only (holds on any machine), with a margin.
    let floor = (WRITTEN - DISK_BPS) as f64 / DISK_BPS as f64 * 0.8;
    eprintln!("wrote {WRITTEN} bytes at --disk-bps 1m in {took:.2} s (floor {floor:.2} s)");
    assert!(
        took >= floor,
        "wrote {WRITTEN} bytes in {took:.2} s, below {floor:.2} s"
    );
    env.assert_clean();
}
