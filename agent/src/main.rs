//! husk-agent: PID 1 inside the guest.
//!
//! Boots from the read-only agent disk, connects to the host over vsock,
//! assembles the container the host describes (image layers or one plain
//! disk as its root), runs its init process and exec'd processes, streams
//! their stdio, then powers the VM off when the init process ends. It must never panic or exit: a dying PID 1
//! panics the kernel, so every path ends in [`guest::power_off`].

mod archive;
mod boot;
mod container;
mod export;
mod guest;
mod log;
mod net;
mod ops;
mod proc;
mod quirks;
mod rootfs;
mod security;
mod seed;
mod shares;
mod spawn;
mod spec;
mod stdio;
mod system;
mod users;

use std::error::Error;

use boot::Outcome;
use system::GuestSystem;

fn main() {
    if !rustix::process::getpid().is_init() {
        eprintln!("husk-agent: must run as PID 1 inside a husk VM");
        std::process::exit(1);
    }
    std::panic::set_hook(Box::new(|info| {
        log::error(&format!("panic: {info}"));
        guest::power_off();
    }));
    match system::run_agent(&mut GuestSystem::new()) {
        Ok(Outcome::Finished(msg)) => log::info(&format!("init finished: {msg:?}")),
        Ok(Outcome::Refused(code)) => log::info(&format!("request refused: {code:?}")),
        Err(e) => log::error(&chain(&e)),
    }
    guest::power_off();
}

/// An error and its sources on one line.
fn chain(err: &dyn Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        line.push_str(": ");
        line.push_str(&e.to_string());
        source = e.source();
    }
    line
}
