//! `features`: what this runtime honours, in the OCI features document's
//! shape (as `runc features` prints it).
//!
//! - No hooks: a bundle with hooks is refused (they would run on the host
//!   around a process that runs in a VM).
//! - Mount options: those of the tmpfs mounts the guest agent makes, and
//!   `bind`/`rbind` (file bind mounts are copied into the VM).
//! - Namespaces: every kind is recognised; a new one of any kind is what
//!   a container alone in its own kernel has (joining a host namespace by
//!   path is refused).
//! - Capabilities: every name of `linux/capability.h` (applied by the
//!   guest agent).
//! - cgroups, seccomp, AppArmor and SELinux act on host processes; the
//!   container's processes run behind the VM boundary instead, so none of
//!   them is enabled.

use serde::Serialize;

use crate::cli::{OCI_VERSION_MAX, OCI_VERSION_MIN};

/// The features document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    oci_version_min: &'static str,
    oci_version_max: &'static str,
    hooks: Vec<&'static str>,
    mount_options: Vec<&'static str>,
    linux: LinuxFeatures,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LinuxFeatures {
    namespaces: Vec<&'static str>,
    capabilities: Vec<&'static str>,
    cgroup: Cgroup,
    seccomp: Enabled,
    apparmor: Enabled,
    selinux: Enabled,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Cgroup {
    v1: bool,
    v2: bool,
    systemd: bool,
    systemd_user: bool,
}

#[derive(Debug, Serialize)]
struct Enabled {
    enabled: bool,
}

/// Namespace kinds of the runtime spec.
const NAMESPACES: [&str; 8] = [
    "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
];

/// This runtime's features.
pub fn features() -> Features {
    let mut mount_options: Vec<&str> = husk_bundle::mounts::TMPFS_FLAGS.to_vec();
    mount_options.extend(["bind", "rbind"]);
    Features {
        oci_version_min: OCI_VERSION_MIN,
        oci_version_max: OCI_VERSION_MAX,
        hooks: Vec::new(),
        mount_options,
        linux: LinuxFeatures {
            namespaces: NAMESPACES.to_vec(),
            capabilities: husk_protocol::CAPABILITY_NAMES.to_vec(),
            cgroup: Cgroup {
                v1: false,
                v2: false,
                systemd: false,
                systemd_user: false,
            },
            seccomp: Enabled { enabled: false },
            apparmor: Enabled { enabled: false },
            selinux: Enabled { enabled: false },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_read_as_the_spec_type() {
        let json = serde_json::to_string_pretty(&features()).unwrap();
        let f: oci_spec::runtime::Features = serde_json::from_str(&json).unwrap();
        assert_eq!(f.oci_version_min(), OCI_VERSION_MIN);
        assert_eq!(f.oci_version_max(), OCI_VERSION_MAX);
        assert_eq!(f.hooks().as_deref(), Some(&[][..]));
        let opts = f.mount_options().clone().unwrap();
        assert!(opts.iter().any(|o| o == "nosuid") && opts.iter().any(|o| o == "bind"));
        let linux = f.linux().clone().unwrap();
        assert_eq!(linux.namespaces().as_ref().map(Vec::len), Some(8));
        let caps = linux.capabilities().clone().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["linux"]["seccomp"]["enabled"], false);
        assert_eq!(v["linux"]["cgroup"]["systemdUser"], false);
    }
}
