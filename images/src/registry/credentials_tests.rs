use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn creds(u: &str, p: &str) -> Credentials {
    Credentials {
        username: u.into(),
        password: p.into(),
    }
}

#[test]
fn stored_credentials_belong_to_their_registry_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker/config.json");
    let mut store = CredentialStore::open(&path).unwrap();
    store
        .store("127.0.0.1:5000", &creds("alice", "pw:with:colons"))
        .unwrap();
    store.store("docker.io", &creds("bob", "hub")).unwrap();

    let store = CredentialStore::open(&path).unwrap();
    assert_eq!(
        store.get("127.0.0.1:5000").unwrap(),
        Some(creds("alice", "pw:with:colons"))
    );
    assert_eq!(store.get("docker.io").unwrap(), Some(creds("bob", "hub")));
    for other in [
        "127.0.0.1:5001",
        "127.0.0.1",
        "example.com",
        "127.0.0.1:5000.evil",
    ] {
        assert_eq!(store.get(other).unwrap(), None, "{other}");
    }
    // Docker's layout: Hub under its v1 URL, others by host.
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(v["auths"][DOCKER_HUB_SERVER]["auth"].is_string(), "{v}");
    assert!(v["auths"]["127.0.0.1:5000"]["auth"].is_string(), "{v}");
}

#[test]
fn the_file_is_private_and_unknown_keys_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"auths":{"https://reg.example:5000/v2/":{"auth":"eDp5"}},"detachKeys":"ctrl-x"}"#,
    )
    .unwrap();
    let mut store = CredentialStore::open(&path).unwrap();
    // A server address with scheme and path matches its host.
    assert_eq!(
        store.get("reg.example:5000").unwrap(),
        Some(creds("x", "y"))
    );
    store.store("reg.example:5000", &creds("a", "b")).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["detachKeys"], "ctrl-x");
    let auths = v["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 1, "the old spelling was replaced: {v}");
    assert!(store.erase("reg.example:5000").unwrap());
    assert!(!store.erase("reg.example:5000").unwrap());
    assert_eq!(
        CredentialStore::open(&path)
            .unwrap()
            .get("reg.example:5000")
            .unwrap(),
        None
    );
    // A created directory is private too.
    let nested = dir.path().join("new/config.json");
    CredentialStore::open(&nested)
        .unwrap()
        .store("h", &creds("u", "p"))
        .unwrap();
    let mode = std::fs::metadata(dir.path().join("new")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    for bad in [
        "[1]",
        "{",
        r#"{"auths":{"h":{"auth":"!!"}}}"#,
        r#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#,
    ] {
        std::fs::write(&path, bad).unwrap();
        let got = CredentialStore::open(&path).and_then(|s| s.get("h"));
        assert!(got.is_err(), "{bad}: {got:?}");
    }
    std::fs::write(&path, "  \n").unwrap();
    assert_eq!(
        CredentialStore::open(&path).unwrap().get("h").unwrap(),
        None
    );
}

#[test]
fn helper_names_cannot_be_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"credsStore":"../../tmp/x"}"#).unwrap();
    let err = CredentialStore::open(&path).unwrap().get("h").unwrap_err();
    assert!(err.to_string().contains("must not contain '/'"), "{err}");
}
