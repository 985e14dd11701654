//! husk-agent: PID 1 inside the guest.
fn main() {}
