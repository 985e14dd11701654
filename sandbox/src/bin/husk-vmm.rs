//! `husk-vmm`: the jailed VMM process (see `husk_sandbox::jail`). Started
//! by the sandbox layer with its control socket as stdin and the guest
//! console as stdout; not meant to be run by hand.

fn main() {
    std::process::exit(husk_sandbox::jail::child::main());
}
