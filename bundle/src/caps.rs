//! Capability names → the bit numbers of `linux/capability.h`, for
//! [`husk_protocol::Capabilities`].
//!
//! Interim: `husk_protocol` is getting its own capability name parsing;
//! once it lands, [`bit`] is replaced by it and this table goes away.

use oci_spec::runtime::Capability;

/// The capabilities by number (index = bit).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit of capability `name` (`CAP_CHOWN` or `chown`), if known.
pub fn bit(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// The name oci-spec serialises `cap` as (`CAP_CHOWN`).
pub fn name(cap: &Capability) -> String {
    serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{cap:?}"))
}

/// The mask of a set of capabilities; the first unknown one is the error.
pub fn mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> Result<u64, String> {
    let mut mask = 0u64;
    for cap in caps {
        let n = name(cap);
        let b = bit(&n).ok_or(n)?;
        mask |= 1 << b;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_bits() {
        assert_eq!(bit("CAP_CHOWN"), Some(0));
        assert_eq!(bit("net_bind_service"), Some(10));
        assert_eq!(bit("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(bit("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(bit("CAP_NOPE"), None);
        let m = mask([&Capability::Chown, &Capability::Kill]).unwrap();
        assert_eq!(m, 1 | 1 << 5);
    }
}
