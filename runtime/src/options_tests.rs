use super::*;

fn image() -> RuntimeConfig {
    RuntimeConfig {
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["img-cmd".into()]),
        env: vec!["A=image".into(), "B=image".into()],
        working_dir: Some("/srv".into()),
        user: Some("daemon".into()),
        ..RuntimeConfig::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn image_values_are_the_defaults() {
    let p = process(&image(), &CreateOptions::default(), "h1").unwrap();
    assert_eq!(p.argv, ["/entry", "img-cmd"]);
    assert_eq!(p.cwd, "/srv");
    assert_eq!(p.user, "daemon");
    let path = format!("PATH={DEFAULT_PATH}");
    assert_eq!(
        p.env,
        strings(&[&path, "HOSTNAME=h1", "A=image", "B=image"])
    );
    assert!(!p.tty && !p.stdin);
}

#[test]
fn flags_override_the_image() {
    let opts = CreateOptions {
        cmd: strings(&["x", "y"]),
        env: strings(&["B=flag", "PATH=/p"]),
        workdir: Some("/w".into()),
        user: Some("1000:1000".into()),
        tty: true,
        ..CreateOptions::default()
    };
    let p = process(&image(), &opts, "h").unwrap();
    assert_eq!(p.argv, ["/entry", "x", "y"]);
    assert_eq!(
        p.env,
        strings(&["HOSTNAME=h", "TERM=xterm", "A=image", "B=flag", "PATH=/p"])
    );
    assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/w", "1000:1000"));
}

#[test]
fn entrypoint_flag_drops_the_image_cmd() {
    let opts = CreateOptions {
        entrypoint: Some(strings(&["/bin/sh"])),
        ..CreateOptions::default()
    };
    assert_eq!(process(&image(), &opts, "h").unwrap().argv, ["/bin/sh"]);
    let opts = CreateOptions {
        entrypoint: Some(vec![]),
        cmd: strings(&["ls"]),
        ..CreateOptions::default()
    };
    assert_eq!(process(&image(), &opts, "h").unwrap().argv, ["ls"]);
    let empty = RuntimeConfig::default();
    assert!(matches!(
        process(&empty, &CreateOptions::default(), "h"),
        Err(Error::NoCommand)
    ));
    let rel = CreateOptions {
        workdir: Some("rel".into()),
        ..CreateOptions::default()
    };
    let err = process(&image(), &rel, "h").unwrap_err().to_string();
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn mount_targets() {
    assert!(check_mount_target("/data").is_ok());
    for bad in ["rel", "/", "/a/../b", "/a\0b"] {
        assert!(check_mount_target(bad).is_err(), "{bad:?}");
    }
}
