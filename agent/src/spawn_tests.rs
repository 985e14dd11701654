use super::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

fn req(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![format!("PATH={DEFAULT_PATH}")],
        cwd: "/".into(),
        root: None,
        user: None,
        stdin: false,
    }
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
    let mut r = req(&["sh", "-c", "echo \"$FOO $(pwd)\"; echo err >&2"]);
    r.env.push("FOO=bar".into());
    r.cwd = "/tmp".into();
    let child = spawn(&r, None).unwrap();
    assert!(child.stdin.is_none());
    let status = wait(child.pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(read_blocking(child.stdout), "bar /tmp\n");
    assert_eq!(read_blocking(child.stderr), "err\n");
}

#[test]
fn missing_command_is_not_found() {
    let err = spawn(&req(&["no-such-command-husk"]), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err.detail.contains("not found in $PATH"), "{}", err.detail);
    let err = spawn(&req(&["/no/such/file"]), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[test]
fn non_executable_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let err = spawn(&req(&[plain.to_str().unwrap()]), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = spawn(&req(&[garbage.to_str().unwrap()]), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotExecutable);
    let err = spawn(&req(&[dir.path().to_str().unwrap()]), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied, "a directory");
}

#[test]
fn bad_requests_are_rejected() {
    assert_eq!(
        spawn(&req(&[]), None).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        spawn(&req(&["a\0b"]), None).unwrap_err().code,
        ErrorCode::BadRequest
    );
    let mut r = req(&["true"]);
    r.cwd = "/no/such/dir".into();
    let err = spawn(&r, None).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.detail.contains("/no/such/dir"), "{}", err.detail);
}
