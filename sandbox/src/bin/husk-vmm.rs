//! `husk-vmm`: the jailed VMM process (see `husk_sandbox::jail`), started
//! by the sandbox layer with its control socket as stdin and the guest
//! console as stdout; as `husk-vmm virtiofs ...`, the share server's
//! start (see `husk_sandbox::virtiofs`). Not meant to be run by hand.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match args.split_first() {
        Some((mode, rest)) if mode == "virtiofs" => husk_sandbox::virtiofs::stage_main(rest),
        _ => husk_sandbox::jail::child::main(),
    };
    std::process::exit(code);
}
