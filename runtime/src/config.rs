//! `config.json`: everything a container is created with. Written once by
//! [`crate::Runtime::create`]; the monitor boots every run from it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use husk_net::{NetworkMode, PortMapping};
use rustix::process::Signal as Sig;
use serde::{Deserialize, Serialize};

/// A container's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Full ID.
    pub id: String,
    /// Name (without Docker's leading `/`).
    pub name: String,
    /// Creation time (RFC 3339, nanoseconds).
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (`sha256:...`).
    pub image_id: String,
    /// The image's layer disks, bottom first (read-only EROFS).
    pub layers: Vec<PathBuf>,
    /// The init process.
    pub process: ProcessConfig,
    /// The container's hostname.
    pub hostname: String,
    /// Extra /etc/hosts lines.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// /etc/resolv.conf content; `None` keeps the image's.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// vCPUs of the VM.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Volumes, in disk order (`vol0`, `vol1`, ...).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Signal `stop` sends first.
    pub stop_signal: Signal,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Published ports: the `-p` values, then (`-P`) the image's exposed
    /// ports; a host port of 0 is chosen when the network starts.
    #[serde(default, deserialize_with = "stored_ports")]
    pub ports: Vec<PortMapping>,
    /// `--network`.
    #[serde(default)]
    pub network: NetworkMode,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The agent disk.
    pub agent_disk: PathBuf,
    /// Seconds the guest may take to boot and reach the agent.
    pub boot_timeout: u64,
}

/// The container's init process (also the defaults of `exec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// Entrypoint + command.
    pub argv: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory (created if missing).
    pub cwd: String,
    /// User as Docker spells it (`""` = root).
    pub user: String,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open (`-i`).
    pub stdin: bool,
}

/// A volume attached to the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Volume name.
    pub name: String,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Created for this container (an image `VOLUME` or `-v /path`).
    pub anonymous: bool,
}

impl ContainerConfig {
    /// `"/bin/sh -c 'x'"`-style command line (arguments joined by spaces).
    pub fn command_line(&self) -> String {
        self.process.argv.join(" ")
    }
}

/// Reads `ports` as stored now (objects), or as `-p` strings, the form
/// configs had before the mappings were typed.
fn stored_ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PortMapping>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Mapping(PortMapping),
        Flag(String),
    }
    let mut out = Vec::new();
    for p in Vec::<Stored>::deserialize(d)? {
        match p {
            Stored::Mapping(m) => out.push(m),
            Stored::Flag(s) => {
                out.extend(husk_net::parse_port_spec(&s).map_err(serde::de::Error::custom)?)
            }
        }
    }
    Ok(out)
}

/// A signal (1 to 64), stored by number; parsed from Docker's spellings
/// (`KILL`, `SIGKILL`, `9`, `SIGRTMIN+3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct Signal(i32);

impl Signal {
    /// SIGKILL.
    pub const KILL: Signal = Signal(Sig::KILL.as_raw());
    /// SIGTERM.
    pub const TERM: Signal = Signal(Sig::TERM.as_raw());

    /// The signal numbered `n`, if it is one.
    pub fn from_raw(n: i32) -> Option<Signal> {
        (1..=64).contains(&n).then_some(Signal(n))
    }

    /// Its number.
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

/// A string that names no signal.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal {0:?}")]
pub struct InvalidSignal(pub String);

impl FromStr for Signal {
    type Err = InvalidSignal;

    fn from_str(s: &str) -> Result<Signal, InvalidSignal> {
        parse_signal(s).ok_or_else(|| InvalidSignal(s.to_string()))
    }
}

impl TryFrom<i32> for Signal {
    type Error = InvalidSignal;

    fn try_from(n: i32) -> Result<Signal, InvalidSignal> {
        Signal::from_raw(n).ok_or_else(|| InvalidSignal(n.to_string()))
    }
}

impl From<Signal> for i32 {
    fn from(s: Signal) -> i32 {
        s.0
    }
}

impl fmt::Display for Signal {
    /// `SIGTERM`, or the number for signals without a name here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SIGNAL_NAMES.iter().find(|&&(_, n)| n == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::from_raw(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN().checked_add(off)?;
        return (off >= 0 && n <= libc::SIGRTMAX()).then_some(Signal(n));
    }
    SIGNAL_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| Signal(v))
}

const SIGNAL_NAMES: &[(&str, i32)] = &[
    ("HUP", Sig::HUP.as_raw()),
    ("INT", Sig::INT.as_raw()),
    ("QUIT", Sig::QUIT.as_raw()),
    ("ILL", Sig::ILL.as_raw()),
    ("TRAP", Sig::TRAP.as_raw()),
    ("ABRT", Sig::ABORT.as_raw()),
    ("IOT", Sig::ABORT.as_raw()),
    ("BUS", Sig::BUS.as_raw()),
    ("FPE", Sig::FPE.as_raw()),
    ("KILL", Sig::KILL.as_raw()),
    ("USR1", Sig::USR1.as_raw()),
    ("SEGV", Sig::SEGV.as_raw()),
    ("USR2", Sig::USR2.as_raw()),
    ("PIPE", Sig::PIPE.as_raw()),
    ("ALRM", Sig::ALARM.as_raw()),
    ("TERM", Sig::TERM.as_raw()),
    ("STKFLT", Sig::STKFLT.as_raw()),
    ("CHLD", Sig::CHILD.as_raw()),
    ("CONT", Sig::CONT.as_raw()),
    ("STOP", Sig::STOP.as_raw()),
    ("TSTP", Sig::TSTP.as_raw()),
    ("TTIN", Sig::TTIN.as_raw()),
    ("TTOU", Sig::TTOU.as_raw()),
    ("URG", Sig::URG.as_raw()),
    ("XCPU", Sig::XCPU.as_raw()),
    ("XFSZ", Sig::XFSZ.as_raw()),
    ("VTALRM", Sig::VTALARM.as_raw()),
    ("PROF", Sig::PROF.as_raw()),
    ("WINCH", Sig::WINCH.as_raw()),
    ("IO", Sig::IO.as_raw()),
    ("PWR", Sig::POWER.as_raw()),
    ("SYS", Sig::SYS.as_raw()),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(s: &str) -> Option<i32> {
        s.parse::<Signal>().ok().map(Signal::as_raw)
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(sig("KILL"), Some(9));
        assert_eq!(sig("sigterm"), Some(15));
        assert_eq!(sig("SIGUSR1"), Some(10));
        assert_eq!(sig("3"), Some(3));
        assert_eq!(sig("SIGRTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(sig("0"), None);
        assert_eq!(sig("65"), None);
        assert_eq!(sig("NOPE"), None);
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
        let err = "NOPE".parse::<Signal>().unwrap_err();
        assert_eq!(err.to_string(), "invalid signal \"NOPE\"");
    }

    #[test]
    fn ports_read_typed_or_as_flags() {
        #[derive(Deserialize)]
        struct Ports {
            #[serde(deserialize_with = "stored_ports")]
            ports: Vec<PortMapping>,
        }
        let typed = husk_net::parse_port_spec("127.0.0.1:8080:80").unwrap();
        let json = serde_json::json!({ "ports": typed }).to_string();
        let read: Ports = serde_json::from_str(&json).unwrap();
        assert_eq!(read.ports, typed);
        let old: Ports =
            serde_json::from_str(r#"{"ports": ["127.0.0.1:8080:80", "53/udp"]}"#).unwrap();
        assert_eq!(old.ports[0], typed[0]);
        assert_eq!(old.ports[1].container_port, 53);
        assert!(serde_json::from_str::<Ports>(r#"{"ports": ["80:x"]}"#).is_err());
    }

    #[test]
    fn signals_are_stored_as_numbers() {
        assert_eq!(serde_json::to_string(&Signal::KILL).unwrap(), "9");
        assert_eq!(serde_json::from_str::<Signal>("15").unwrap(), Signal::TERM);
        assert!(serde_json::from_str::<Signal>("0").is_err());
        assert!(serde_json::from_str::<Signal>("99").is_err());
    }
}
