//! The checks of `plan`, and the settings applied to real processes
//! through `spawn` (the path of init and exec'd processes alike), read
//! back from the child's /proc/self/status and `ulimit`. Those need root
//! (they run on the host, without a VM) and are skipped without it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use husk_protocol::{ErrorCode, ExecRequest, Rlimit};

use super::*;
use crate::spawn::{spawn, Entry, DEFAULT_PATH};
use crate::users::Creds;

const NET_BIND_SERVICE: u64 = 1 << 10;

fn nofile(soft: u64, hard: u64) -> Rlimit {
    Rlimit {
        resource: RlimitResource::RlimitNofile,
        soft,
        hard,
    }
}

#[test]
fn limits_are_checked() {
    let sec = |rlimits| ProcessSecurity {
        rlimits,
        ..ProcessSecurity::default()
    };
    let p = plan(&sec(vec![nofile(100, 200)]), 0, false).unwrap();
    assert_eq!(
        p.rlimits,
        [(
            RlimitResource::RlimitNofile,
            rustix::process::Rlimit {
                current: Some(100),
                maximum: Some(200)
            }
        )]
    );
    assert_eq!(p.caps, None, "unprivileged: capabilities untouched");
    let unlimited = plan(&sec(vec![nofile(u64::MAX, u64::MAX)]), 0, false).unwrap();
    assert_eq!(unlimited.rlimits[0].1.current, None);
    assert_eq!(unlimited.rlimits[0].1.maximum, None);

    let err = plan(&sec(vec![nofile(300, 200)]), 0, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "resource limit RLIMIT_NOFILE: the soft limit 300 is above the hard limit 200"
    );
    let err = plan(&sec(vec![nofile(u64::MAX, 1)]), 0, false).unwrap_err();
    assert!(err.to_string().contains("soft limit unlimited"), "{err}");
    let err = plan(&sec(vec![nofile(1, 1), nofile(2, 2)]), 0, false).unwrap_err();
    assert_eq!(err, SecurityError::DuplicateRlimit("RLIMIT_NOFILE".into()));
}

#[test]
fn missing_capabilities_follow_docker() {
    let sec = ProcessSecurity::default();
    assert_eq!(requested_caps(&sec, 0), Capabilities::docker_default());
    let user = requested_caps(&sec, 1000);
    assert_eq!(user.bounding, 0xa80425fb);
    assert_eq!(
        (
            user.effective,
            user.permitted,
            user.inheritable,
            user.ambient
        ),
        (0, 0, 0, 0)
    );
    let sec = ProcessSecurity {
        capabilities: Some(Capabilities::all()),
        ..sec
    };
    assert_eq!(requested_caps(&sec, 1000), Capabilities::all());
}

#[test]
fn capability_sets_are_masked_and_checked() {
    // Bits past the kernel's last capability are ignored.
    let p = cap_plan(&Capabilities::all(), 0, 37).unwrap();
    assert_eq!(p.sets.bounding, (1 << 38) - 1);
    let high = Capabilities::from_mask(NET_BIND_SERVICE | 1 << 63);
    assert_eq!(
        cap_plan(&high, 0, 40).unwrap().sets,
        Capabilities::from_mask(NET_BIND_SERVICE)
    );
    assert!(!p.keep, "root needs no PR_SET_KEEPCAPS");
    assert!(cap_plan(&high, 1000, 40).unwrap().keep);
    let none = Capabilities::default();
    assert!(!cap_plan(&none, 1000, 40).unwrap().keep);

    let eff = Capabilities {
        effective: 0b11,
        permitted: 0b01,
        bounding: 0b11,
        ..none
    };
    assert_eq!(
        cap_plan(&eff, 0, 40).unwrap_err().to_string(),
        "effective capabilities that are not permitted: CAP_DAC_OVERRIDE"
    );
    let amb = Capabilities {
        permitted: 0b1,
        bounding: 0b1,
        ambient: 0b1,
        ..none
    };
    assert_eq!(
        cap_plan(&amb, 0, 40),
        Err(SecurityError::AmbientNotAllowed("CAP_CHOWN".into()))
    );
    let inh = Capabilities {
        inheritable: NET_BIND_SERVICE,
        ..none
    };
    assert_eq!(
        cap_plan(&inh, 0, 40),
        Err(SecurityError::InheritableNotBounded(
            "CAP_NET_BIND_SERVICE".into()
        ))
    );
}

#[test]
fn groups_add_to_the_users_once() {
    assert_eq!(groups(&[0, 10], &[4321, 10, 4321]).unwrap(), [0, 10, 4321]);
    assert_eq!(groups(&[], &[]).unwrap(), Vec::<u32>::new());
    let many: Vec<u32> = (0..=MAX_GROUPS as u32).collect();
    assert_eq!(groups(&[0], &many), Err(SecurityError::TooManyGroups));
}

#[test]
fn the_last_capability_is_the_kernels() {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap();
    assert_eq!(last_cap().to_string(), text.trim());
}

// ---- real processes (root only) ----

/// The status lines the tests compare, then `ulimit -n` and `ulimit -Hn`.
const PROBE: &str = "grep -E '^(Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' \
                     /proc/self/status; ulimit -n; ulimit -Hn";

fn is_root(test: &str) -> bool {
    let root = rustix::process::getuid().is_root();
    if !root {
        eprintln!("{test}: skipped (needs root to change credentials)");
    }
    root
}

fn probe(security: ProcessSecurity) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), PROBE.into()],
        env: vec![format!("PATH={DEFAULT_PATH}")],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security,
    }
}

fn creds(uid: u32) -> Creds {
    Creds {
        uid,
        gid: uid,
        groups: vec![uid],
        home: "/".into(),
    }
}

/// Runs `req` as `uid` through `spawn`; returns its output after a
/// successful exit.
fn run_as(uid: u32, req: &ExecRequest) -> String {
    let child = spawn(req, &creds(uid), Entry::Host, Path::new("/dev/ptmx")).unwrap();
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    let waited = unsafe { libc::waitpid(child.pid, &mut status, 0) };
    assert_eq!(waited, child.pid);
    let out = read_all(child.io.stdout);
    let err = child.io.stderr.map(read_all).unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}: {out}{err}"
    );
    out
}

/// Reads a non-blocking pipe to its end.
fn read_all(mut f: File) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..2000 {
        match f.read(&mut buf) {
            Ok(0) => return String::from_utf8(out).unwrap(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no EOF");
}

/// The expected probe output (the kernel ends the Groups line with a
/// space).
fn status(groups: &str, caps: [u64; 5], nnp: u8, nofile: (&str, &str)) -> String {
    let [inh, prm, eff, bnd, amb] = caps;
    format!(
        "Groups:\t{groups} \nCapInh:\t{inh:016x}\nCapPrm:\t{prm:016x}\nCapEff:\t{eff:016x}\n\
         CapBnd:\t{bnd:016x}\nCapAmb:\t{amb:016x}\nNoNewPrivs:\t{nnp}\n{}\n{}\n",
        nofile.0, nofile.1
    )
}

/// The agent's own nofile limits, which a process keeps by default.
fn own_nofile() -> (String, String) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let text = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    (text(l.current), text(l.maximum))
}

#[test]
fn root_process_gets_what_it_asks_for() {
    if !is_root("root_process_gets_what_it_asks_for") {
        return;
    }
    let req = probe(ProcessSecurity {
        umask: None,
        additional_gids: vec![4321],
        rlimits: vec![nofile(100, 200)],
        capabilities: Some(Capabilities::from_mask(NET_BIND_SERVICE)),
        no_new_privileges: true,
    });
    let bind = NET_BIND_SERVICE;
    assert_eq!(
        run_as(0, &req),
        status("0 4321", [0, bind, bind, bind, 0], 1, ("100", "200"))
    );
}

#[test]
fn the_umask_is_the_requests_or_the_agents() {
    let umask = |mask: Option<u32>| {
        let mut req = probe(ProcessSecurity {
            umask: mask,
            ..ProcessSecurity::default()
        });
        req.argv = vec!["sh".into(), "-c".into(), "umask".into()];
        // As the test's own user: no credentials to switch.
        // SAFETY: geteuid has no preconditions.
        run_as(unsafe { libc::geteuid() }, &req)
    };
    assert_eq!(umask(Some(0o027)), "0027\n");
    assert_eq!(umask(Some(0)), "0000\n");
    // Without a request: the agent's own (this process's).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap()
        .trim();
    assert_eq!(umask(None), format!("{own}\n"));
}

#[test]
fn processes_without_a_request_get_dockers_defaults() {
    if !is_root("processes_without_a_request_get_dockers_defaults") {
        return;
    }
    let (soft, hard) = own_nofile();
    let d = 0xa80425fb;
    let req = probe(ProcessSecurity::default());
    assert_eq!(
        run_as(0, &req),
        status("0", [0, d, d, d, 0], 0, (&soft, &hard))
    );
    // Another user: the bounding set only.
    assert_eq!(
        run_as(1000, &req),
        status("1000", [0, 0, 0, d, 0], 0, (&soft, &hard))
    );
}

#[test]
fn ambient_capabilities_survive_the_user_switch_and_exec() {
    if !is_root("ambient_capabilities_survive_the_user_switch_and_exec") {
        return;
    }
    let bind = NET_BIND_SERVICE;
    let req = probe(ProcessSecurity {
        additional_gids: vec![50, 1000],
        capabilities: Some(Capabilities {
            bounding: Capabilities::docker_default_mask(),
            effective: bind,
            permitted: bind,
            inheritable: bind,
            ambient: bind,
        }),
        ..ProcessSecurity::default()
    });
    let (soft, hard) = own_nofile();
    let d = 0xa80425fb;
    assert_eq!(
        run_as(1000, &req),
        status("50 1000", [bind, bind, bind, d, bind], 0, (&soft, &hard))
    );
}

#[test]
fn failures_are_bad_requests_with_the_reason() {
    let spawn_err = |uid, security| {
        let req = probe(security);
        spawn(&req, &creds(uid), Entry::Host, Path::new("/dev/ptmx")).unwrap_err()
    };
    // Refused before fork.
    let err = spawn_err(
        0,
        ProcessSecurity {
            rlimits: vec![nofile(2, 1)],
            ..ProcessSecurity::default()
        },
    );
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.detail.contains("RLIMIT_NOFILE"), "{}", err.detail);
    // Failing in the child: no kernel allows an unlimited nofile.
    let err = spawn_err(
        0,
        ProcessSecurity {
            rlimits: vec![nofile(64, u64::MAX)],
            ..ProcessSecurity::default()
        },
    );
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(
        err.detail
            .starts_with("setting the resource limit RLIMIT_NOFILE (soft 64, hard unlimited): "),
        "{}",
        err.detail
    );
    if rustix::process::getuid().is_root() {
        let err = spawn_err(
            0,
            ProcessSecurity {
                capabilities: Some(Capabilities {
                    effective: NET_BIND_SERVICE,
                    ..Capabilities::default()
                }),
                ..ProcessSecurity::default()
            },
        );
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(
            err.detail.contains("CAP_NET_BIND_SERVICE"),
            "{}",
            err.detail
        );
    }
}
