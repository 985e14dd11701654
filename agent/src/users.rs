//! Resolving a Docker-style user spec (`""`, `name`, `uid`, `name:group`,
//! `uid:gid`, ...) against the container's /etc/passwd and /etc/group.
//!
//! Follows runc's rules: a numeric uid need not exist in /etc/passwd (its
//! group is then 0 and its home `/`); a name must exist; an explicit group
//! replaces the supplementary groups, otherwise they come from the
//! memberships listed in /etc/group.

use std::io::Read;
use std::path::Path;

/// The largest passwd or group file read (bytes); the rest is ignored.
const MAX_DB: u64 = 4 << 20;

/// Why a user spec could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// The named user is not in /etc/passwd.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// The named group is not in /etc/group.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// The spec is malformed (empty part, bad characters).
    #[error("invalid user spec {0:?}")]
    Invalid(String),
}

/// Resolved credentials for a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (passed to setgroups).
    pub groups: Vec<u32>,
    /// The home directory (for `HOME`).
    pub home: String,
}

/// One /etc/passwd entry (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 6 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members,
            })
        })
        .collect()
}

fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves `spec` against the text of /etc/passwd and /etc/group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Creds, UserError> {
    if spec.contains(['\0', '\n']) || spec.len() > 256 {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part.is_some_and(str::is_empty) || (user_part.is_empty() && group_part.is_some()) {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let users = parse_passwd(passwd);
    let entry = if user_part.is_empty() {
        users.iter().find(|u| u.uid == 0).cloned()
    } else if let Some(uid) = numeric(user_part) {
        users.iter().find(|u| u.uid == uid).cloned()
    } else {
        let found = users.iter().find(|u| u.name == user_part).cloned();
        Some(found.ok_or_else(|| UserError::NoUser(user_part.to_string()))?)
    };
    let uid = match (&entry, numeric(user_part)) {
        (_, Some(uid)) => uid,
        (Some(e), None) => e.uid,
        (None, None) => 0,
    };
    let groups_db = parse_group(group);
    let (gid, groups) = match group_part {
        Some(g) => {
            let gid = match numeric(g) {
                Some(gid) => gid,
                None => groups_db
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
            };
            (gid, vec![gid])
        }
        None => {
            let gid = entry.as_ref().map_or(0, |e| e.gid);
            let mut groups = vec![gid];
            if let Some(e) = &entry {
                for g in groups_db.iter().filter(|g| g.members.contains(&e.name)) {
                    if !groups.contains(&g.gid) {
                        groups.push(g.gid);
                    }
                }
            }
            (gid, groups)
        }
    };
    let home = entry
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());
    Ok(Creds {
        uid,
        gid,
        groups,
        home,
    })
}

/// Reads a (bounded) database file; a missing or unreadable file is empty.
pub fn read_db(path: &Path) -> String {
    let mut text = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_DB).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n\
        nohome:x:1002:1002:::/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        users:x:100:alice\n\
        alice:x:1000:\n\
        wheel:x:10:alice, bob\n\
        bad:x:notanumber:alice\n";

    fn r(spec: &str) -> Result<Creds, UserError> {
        resolve(spec, PASSWD, GROUP)
    }

    #[test]
    fn empty_spec_is_root_with_its_home() {
        let c = r("").unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/root"));
        assert_eq!(c.groups, vec![0]);
        // No passwd at all: still root.
        let c = resolve("", "", "").unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (0, 0, "/"));
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let c = r("alice").unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(c.groups, vec![1000, 100, 10]);
        let c = r("bob").unwrap();
        assert_eq!(c.groups, vec![100, 10]);
        assert_eq!(r("nohome").unwrap().home, "/");
    }

    #[test]
    fn numeric_uids_need_not_exist() {
        let c = r("1000").unwrap();
        assert_eq!((c.uid, c.gid), (1000, 1000), "gid from passwd");
        let c = r("4242").unwrap();
        assert_eq!((c.uid, c.gid, c.home.as_str()), (4242, 0, "/"));
        assert_eq!(c.groups, vec![0]);
    }

    #[test]
    fn explicit_groups_replace_memberships() {
        let c = r("alice:wheel").unwrap();
        assert_eq!((c.uid, c.gid), (1000, 10));
        assert_eq!(c.groups, vec![10]);
        let c = r("4242:4343").unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (4242, 4343, vec![4343]));
        let c = r("bob:0").unwrap();
        assert_eq!((c.uid, c.gid), (1001, 0));
    }

    #[test]
    fn unknown_names_and_bad_specs_fail() {
        assert_eq!(r("mallory"), Err(UserError::NoUser("mallory".into())));
        assert_eq!(
            r("alice:nogroup"),
            Err(UserError::NoGroup("nogroup".into()))
        );
        assert!(matches!(r("alice:"), Err(UserError::Invalid(_))));
        assert!(matches!(r(":10"), Err(UserError::Invalid(_))));
        assert!(matches!(r("a\0b"), Err(UserError::Invalid(_))));
        // A numeric-looking name that overflows is a name, and unknown.
        assert!(matches!(r("99999999999"), Err(UserError::NoUser(_))));
    }
}
