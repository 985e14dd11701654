//! The host's quirk environment: variables named in
//! [`husk_protocol::HOST_QUIRK_ENV`] that the VMM puts on the kernel command
//! line on hosts with known limits (e.g. keeping glibc, OpenSSL and Go off
//! AVX where AVX state is not kept across guest processes). The kernel
//! hands them to PID 1's environment; the agent passes them on to every
//! process it starts, init and exec'd ones alike.

use husk_protocol::HOST_QUIRK_ENV;

/// The quirk variables present in the agent's own environment, as
/// `(name, value)` pairs in [`HOST_QUIRK_ENV`] order.
pub fn from_agent_env() -> Vec<(String, String)> {
    HOST_QUIRK_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

/// `env` (`KEY=VALUE` entries) with the host's `quirks` added.
///
/// The merge rule, per variable:
/// - not set by the container: ours is added as it is;
/// - `GLIBC_TUNABLES` (`:`-separated `name=value` tunables) and `GODEBUG`
///   (`,`-separated `key=value` settings) are lists: the container's own
///   entries are kept, in their order, and each of ours that is not
///   already there is appended after them. glibc and Go both apply the
///   last setting of a name, so for a name both set, ours applies (a host
///   quirk guards against corruption, which a container cannot opt into);
/// - any other variable (`OPENSSL_ia32cap`: one bit mask, no list): the
///   container's own value wins.
///
/// Entries other than the quirk variables are left as they are, in order.
pub fn merge_env(env: &[String], quirks: &[(String, String)]) -> Vec<String> {
    let mut env = env.to_vec();
    for (name, ours) in quirks {
        let prefix = format!("{name}=");
        let Some(entry) = env.iter_mut().find(|e| e.starts_with(&prefix)) else {
            env.push(format!("{name}={ours}"));
            continue;
        };
        let Some(sep) = list_separator(name) else {
            continue;
        };
        let mut items: Vec<&str> = entry[prefix.len()..]
            .split(sep)
            .filter(|i| !i.is_empty())
            .collect();
        for item in ours.split(sep).filter(|i| !i.is_empty()) {
            if !items.contains(&item) {
                items.push(item);
            }
        }
        let merged = format!("{prefix}{}", items.join(&sep.to_string()));
        *entry = merged;
    }
    env
}

/// The separator of a list-valued quirk variable; `None`: a single value.
fn list_separator(name: &str) -> Option<char> {
    match name {
        "GLIBC_TUNABLES" => Some(':'),
        "GODEBUG" => Some(','),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quirks() -> Vec<(String, String)> {
        [
            (
                "GLIBC_TUNABLES",
                "glibc.cpu.hwcaps=-AVX_Usable,-AVX2_Usable",
            ),
            ("OPENSSL_ia32cap", "~0x200000200000000"),
            ("GODEBUG", "cpu.avx=off,cpu.avx2=off"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn env(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn absent_variables_are_added_after_the_containers_own() {
        let merged = merge_env(&env(&["PATH=/bin", "HOME=/root"]), &quirks());
        assert_eq!(
            merged,
            env(&[
                "PATH=/bin",
                "HOME=/root",
                "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX_Usable,-AVX2_Usable",
                "OPENSSL_ia32cap=~0x200000200000000",
                "GODEBUG=cpu.avx=off,cpu.avx2=off",
            ])
        );
    }

    #[test]
    fn lists_keep_the_containers_entries_and_add_ours() {
        let merged = merge_env(
            &env(&[
                "GLIBC_TUNABLES=glibc.malloc.arena_max=2",
                "GODEBUG=http2client=0,cpu.avx=off",
                "GODEBUGX=1",
            ]),
            &quirks(),
        );
        assert_eq!(
            merged,
            env(&[
                "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.cpu.hwcaps=-AVX_Usable,-AVX2_Usable",
                "GODEBUG=http2client=0,cpu.avx=off,cpu.avx2=off",
                "GODEBUGX=1",
                "OPENSSL_ia32cap=~0x200000200000000",
            ])
        );
        // Merging twice changes nothing more.
        assert_eq!(merge_env(&merged, &quirks()), merged);
    }

    #[test]
    fn an_empty_list_gets_ours_and_a_single_value_stays_the_containers() {
        let merged = merge_env(&env(&["GLIBC_TUNABLES=", "OPENSSL_ia32cap=0x0"]), &quirks());
        assert_eq!(
            merged,
            env(&[
                "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX_Usable,-AVX2_Usable",
                "OPENSSL_ia32cap=0x0",
                "GODEBUG=cpu.avx=off,cpu.avx2=off",
            ])
        );
    }

    #[test]
    fn without_quirks_the_environment_is_unchanged() {
        let e = env(&["A=1", "GODEBUG=x=1"]);
        assert_eq!(merge_env(&e, &[]), e);
    }
}
