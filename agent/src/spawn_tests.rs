use super::*;
use std::os::unix::fs::PermissionsExt;

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![format!("PATH={DEFAULT_PATH}")],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security: Default::default(),
    }
}

fn root_creds() -> Creds {
    Creds {
        uid: 0,
        gid: 0,
        groups: vec![],
        home: "/root".into(),
    }
}

fn start(r: &ExecRequest) -> Result<Spawned, SpawnError> {
    spawn(r, &root_creds(), Entry::Host, Path::new("/dev/ptmx"))
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

fn read_blocking(mut f: File) -> String {
    // The read ends are non-blocking; poll by retrying until EOF.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
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

#[test]
fn candidates_follow_execvp() {
    assert_eq!(lookup_candidates("/bin/sh", "/x"), ["/bin/sh"]);
    assert_eq!(lookup_candidates("a/b", "/x"), ["a/b"]);
    assert_eq!(
        lookup_candidates("ls", "/usr/bin:/bin/:"),
        ["/usr/bin/ls", "/bin/ls", "./ls"]
    );
    assert!(lookup_candidates("", "/bin").is_empty());
}

#[test]
fn runs_with_env_cwd_and_path_lookup() {
    let mut r = req(&["sh", "-c", "echo \"$FOO $(pwd) $HOME\"; echo err >&2"]);
    r.env.push("FOO=bar".into());
    r.cwd = "/tmp".into();
    let child = start(&r).unwrap();
    assert!(child.io.stdin.is_none());
    let status = wait(child.pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(read_blocking(child.io.stdout), "bar /tmp /root\n");
    assert_eq!(read_blocking(child.io.stderr.unwrap()), "err\n");
}

#[test]
fn missing_command_is_not_found() {
    let err = start(&req(&["no-such-command-husk"])).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err.detail.contains("not found in $PATH"), "{}", err.detail);
    let err = start(&req(&["/no/such/file"])).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[test]
fn non_executable_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let err = start(&req(&[plain.to_str().unwrap()])).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = start(&req(&[garbage.to_str().unwrap()])).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotExecutable);
    let err = start(&req(&[dir.path().to_str().unwrap()])).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied, "a directory");
}

#[test]
fn bad_requests_are_rejected() {
    assert_eq!(start(&req(&[])).unwrap_err().code, ErrorCode::BadRequest);
    assert_eq!(
        start(&req(&["a\0b"])).unwrap_err().code,
        ErrorCode::BadRequest
    );
    let mut r = req(&["true"]);
    r.cwd = "/proc/no/such/dir".into();
    let err = start(&r).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.detail.contains("/proc/no/such/dir"), "{}", err.detail);
}
