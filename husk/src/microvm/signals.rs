//! SIGINT/SIGTERM as a pollable fd: the runtime library's implementation,
//! shared with the container monitor and sessions.

pub use husk_runtime::signals::Signals;
