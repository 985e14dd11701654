//! `husk-oci`: an OCI runtime with runc's command line, for the tools that
//! drive runtimes that way (podman through conmon, containerd's
//! `io.containerd.runc.v2` shim with `--runc-binary`). Every container is
//! a husk container of the `husk-runtime` library, created from its OCI
//! bundle by `husk-bundle` and run in its own KVM microVM by a monitor
//! process, exactly as `husk run` and the containerd shim do.
//!
//! The same binary is also that monitor (`husk-oci container-monitor ROOT
//! ID LAUNCH`, dispatched before anything else) — the host process whose
//! pid `create` reports.
//!
//! Exit status: 0, or 1 with a one-line error on stderr (and in the
//! `--log` file); a foreground `exec` exits with its process's status.

// Flag doc comments are clap's help texts.
#![allow(rustdoc::broken_intra_doc_links)]

mod cli;
mod commands;
mod console;
mod container;
mod create;
mod exec;
mod features;
mod logfile;

use anyhow::Result;

use cli::{Cli, Command, Parsed};
use container::Oci;
use logfile::ErrorLog;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "container-monitor") {
        // Before any thread: the monitor forks.
        let arg = |i: usize| {
            args.get(i)
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let code = husk_runtime::monitor::main(std::path::Path::new(&arg(2)), &arg(3), &arg(4));
        std::process::exit(code);
    }
    let (cli, command) = match cli::parse(args) {
        Parsed::Run(cli, command) => (cli, *command),
        Parsed::Exit { text, code } => {
            if code == 0 {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            std::process::exit(code);
        }
    };
    cloexec_inherited();
    let log = ErrorLog::new(cli.log.clone(), cli.log_format);
    let code = match run(&cli, command) {
        Ok(code) => code,
        Err(e) => {
            log.error(&format!("{e:#}"));
            1
        }
    };
    std::process::exit(code);
}

/// Runs `command`; the exit status.
fn run(cli: &Cli, command: Command) -> Result<i32> {
    if let Command::Features = command {
        println!("{}", serde_json::to_string_pretty(&features::features())?);
        return Ok(0);
    }
    let oci = Oci::open(&cli.root)?;
    match command {
        Command::Create(args) => create::create(&oci, &args)?,
        Command::Start(a) => commands::start(&oci, &a.id)?,
        Command::State(a) => println!("{}", commands::state(&oci, &a.id)?),
        Command::Kill(args) => commands::kill(&oci, &args)?,
        Command::Delete(args) => commands::delete(&oci, &args)?,
        Command::Exec(args) => return exec::exec(&oci, &args),
        Command::Ps(args) => println!("{}", commands::ps(&oci, &args)?),
        Command::Features | Command::Version => {}
    }
    Ok(0)
}

/// Marks every descriptor this process inherited above stderr
/// close-on-exec, so the monitors it starts do not hold its caller's
/// pipes open (runc likewise passes none of them to the container).
fn cloexec_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl(2) F_GETFD/F_SETFD only read and set one
        // descriptor's flags (the directory's own, closed by now, fails
        // with EBADF); no memory is involved.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
