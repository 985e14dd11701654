//! `husk login` / `husk logout` against registries that require a login
//! (Debian's docker-registry with htpasswd basic authentication).

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use super::support::*;

/// Loads the test image and tags it for `registry`.
fn tagged(env: &Env, registry: &str) -> String {
    let img = multi_layer_image();
    let dir = env.path().join("layout");
    write_oci_dir(&dir, &img, "docker.io/library/multi:1");
    env.ok(&["load", "-i", dir.to_str().expect("utf8")]);
    let remote = format!("{registry}/app:1.0");
    env.ok(&["tag", "multi:1", &remote]);
    remote
}

/// `husk login` with the password on stdin.
fn login_stdin(env: &Env, server: &str, user: &str, password: &str) -> husk_tests::Finished {
    let file = env.path().join("password");
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    let mut cmd = env.command(&["login", "-u", user, "--password-stdin", server]);
    cmd.stdin(Stdio::from(std::fs::File::open(&file).expect("open")));
    husk_tests::run(cmd, Duration::from_secs(120)).expect("husk login")
}

#[test]
fn login_is_checked_stored_privately_and_used_for_that_registry_only() {
    if skip("login_is_checked_stored_privately_and_used_for_that_registry_only") {
        return;
    }
    let reg = Registry::with_login("alice", "s3cret pass");
    let other = Registry::with_login("alice", "s3cret pass");
    let env = Env::new();
    let remote = tagged(&env, &reg.addr);

    // Without a login the registry refuses.
    let err = env.fail(&["push", &remote]);
    assert!(err.contains("credentials required"), "{err}");
    // A wrong password is refused by the registry and nothing is stored.
    let f = login_stdin(&env, &reg.addr, "alice", "wrong");
    assert_ne!(f.code(), 0, "{}", f.stdout);
    assert!(
        f.stderr.contains("incorrect username or password"),
        "{}",
        f.stderr
    );
    assert!(!env.docker_config().join("config.json").exists());
    // Docker's argument checks.
    let err = env.fail(&["login", "--password-stdin", &reg.addr]);
    assert!(
        err.contains("Must provide --username with --password-stdin"),
        "{err}"
    );
    let err = env.fail(&["login", &reg.addr]);
    assert!(err.contains("non TTY device"), "{err}");

    let f = login_stdin(&env, &reg.addr, "alice", "s3cret pass");
    assert_eq!(f.code(), 0, "{}", f.stderr);
    assert_eq!(f.stdout, "Login Succeeded\n");
    let config = env.docker_config().join("config.json");
    let mode = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert!(v["auths"][&reg.addr]["auth"].is_string(), "{v}");

    // Used for this registry ...
    env.ok(&["push", &remote]);
    env.ok(&["rmi", &remote]);
    env.ok(&["pull", &remote]);
    // ... and not for another one on the same host.
    let elsewhere = format!("{}/app:1.0", other.addr);
    env.ok(&["tag", &remote, &elsewhere]);
    let err = env.fail(&["push", &elsewhere]);
    assert!(err.contains("credentials required"), "{err}");

    let out = env.ok(&["logout", &reg.addr]);
    assert_eq!(
        out,
        format!("Removing login credentials for {}\n", reg.addr)
    );
    let out = env.ok(&["logout", &reg.addr]);
    assert_eq!(out, format!("Not logged in to {}\n", reg.addr));
    env.ok(&["rmi", &remote]);
    let err = env.fail(&["pull", &remote]);
    assert!(err.contains("credentials required"), "{err}");
}

/// A credential helper (`credsStore`) keeps the secret; the config file
/// only records that a login exists. The helper here is a fixture
/// speaking Docker's helper protocol, keeping its entries in a directory.
#[test]
fn login_honours_a_credential_helper() {
    if skip("login_honours_a_credential_helper") {
        return;
    }
    let reg = Registry::with_login("bob", "helper-pw");
    let env = Env::new();
    let remote = tagged(&env, &reg.addr);
    let bin = env.path().join("bin");
    let vault = env.path().join("vault");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&vault).expect("vault");
    let helper = bin.join("docker-credential-husktest");
    let script = format!(
        r#"#!/bin/sh
read -r input || [ -n "$input" ]
case "$1" in
store) key=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
       printf '%s' "$input" > "{vault}/$key" ;;
get)   [ -f "{vault}/$input" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
       cat "{vault}/$input" ;;
erase) [ -f "{vault}/$input" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
       rm "{vault}/$input" ;;
esac
"#,
        vault = vault.display()
    );
    std::fs::write(&helper, script).expect("helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(env.docker_config()).expect("config dir");
    std::fs::write(
        env.docker_config().join("config.json"),
        r#"{"credsStore":"husktest"}"#,
    )
    .expect("config");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut cmd = env.command(&["login", "-u", "bob", "-p", "helper-pw", &reg.addr]);
    cmd.env("PATH", &path);
    let f = husk_tests::run(cmd, Duration::from_secs(120)).expect("login");
    assert_eq!(f.code(), 0, "{}", f.stderr);
    assert!(
        f.stderr.contains("--password-stdin"),
        "the -p warning: {}",
        f.stderr
    );
    let stored = std::fs::read_to_string(vault.join(&reg.addr)).expect("the helper stored it");
    assert!(stored.contains("helper-pw"), "{stored}");
    let config = std::fs::read_to_string(env.docker_config().join("config.json")).expect("config");
    assert!(
        !config.contains("helper-pw") && config.contains(&reg.addr),
        "{config}"
    );

    let mut cmd = env.command(&["push", &remote]);
    cmd.env("PATH", &path);
    let f = husk_tests::run(cmd, Duration::from_secs(300)).expect("push");
    assert_eq!(
        f.code(),
        0,
        "push with the helper's credentials: {}",
        f.stderr
    );

    let mut cmd = env.command(&["logout", &reg.addr]);
    cmd.env("PATH", &path);
    let f = husk_tests::run(cmd, Duration::from_secs(60)).expect("logout");
    assert_eq!(f.code(), 0, "{}", f.stderr);
    assert!(!vault.join(&reg.addr).exists(), "the helper erased it");
}
