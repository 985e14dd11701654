//! Manual testing: boot a kernel with an optional initramfs and disks.
//!
//! `cargo run -p vmm --example run_vm -- KERNEL [--initrd F] [--vcpus N]
//!  [--mem MIB] [--disk PATH[:ro]]... [--vsock CID:UDS] [--console FILE]
//!  [--stop-after SECS] [-v] [-- EXTRA CMDLINE...]`

use std::path::PathBuf;
use std::time::Duration;

use vmm::{ConsoleOutput, DiskConfig, Vm, VmConfig, VsockConfig};

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

fn usage() -> ! {
    eprintln!("usage: run_vm KERNEL [--initrd F] [--vcpus N] [--mem MIB] [--disk PATH[:ro]]... [--vsock CID:UDS] [--console FILE] [--stop-after SECS] [-v] [-- EXTRA...]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = VmConfig {
        kernel: PathBuf::from(args.next().unwrap_or_else(|| usage())),
        initrd: None,
        cmdline_extra: String::new(),
        vcpus: 1,
        mem_mib: 256,
        disks: vec![],
        vsock: None,
        net: None,
        fs: None,
        console: ConsoleOutput::Stdout,
        seccomp: vmm::SeccompMode::Enforce,
    };
    let mut level = log::LevelFilter::Info;
    let mut stop_after = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--initrd" => config.initrd = Some(val().into()),
            "--vcpus" => config.vcpus = val().parse().unwrap_or_else(|_| usage()),
            "--mem" => config.mem_mib = val().parse().unwrap_or_else(|_| usage()),
            "--console" => config.console = ConsoleOutput::File(val().into()),
            "--stop-after" => stop_after = Some(val().parse::<u64>().unwrap_or_else(|_| usage())),
            "--disk" => {
                let v = val();
                let (path, ro) = match v.strip_suffix(":ro") {
                    Some(p) => (p.to_string(), true),
                    None => (v, false),
                };
                let serial = format!("disk{}", config.disks.len());
                config.disks.push(DiskConfig {
                    path: Some(path.into()),
                    read_only: ro,
                    serial,
                    rate_limit: Default::default(),
                });
            }
            "--vsock" => {
                let v = val();
                let (cid, uds) = v.split_once(':').unwrap_or_else(|| usage());
                config.vsock = Some(VsockConfig {
                    guest_cid: cid.parse().unwrap_or_else(|_| usage()),
                    uds_path: uds.into(),
                    listener: None,
                    streams: vmm::VsockStreams::Raw,
                });
            }
            "-v" => level = log::LevelFilter::Debug,
            "--" => {
                config.cmdline_extra = args.by_ref().collect::<Vec<_>>().join(" ");
            }
            _ => usage(),
        }
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);

    let vm = match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Some(secs) = stop_after {
        let h = vm.stop_handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            h.stop();
        });
    }
    let start = std::time::Instant::now();
    match vm.run() {
        Ok(r) => eprintln!("VM exited: {r:?} after {:?}", start.elapsed()),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
    }
}
