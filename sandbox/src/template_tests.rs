use super::*;

fn inputs(memory_mib: u32) -> TemplateInputs {
    TemplateInputs {
        format: TemplateInputs::current_format(),
        kernel: "/k/vmlinux".into(),
        kernel_sha256: "00".repeat(32),
        agent_disk: "/c/agent-1.erofs".into(),
        vcpus: 1,
        memory_mib,
        slots: 4,
        net_mtu: None,
        host: "Vmx".into(),
        cmdline: "root=/dev/vda".into(),
    }
}

fn build_ok(dir: &Path) -> Result<(), TemplateError> {
    fs::write(dir.join("state"), b"s").unwrap();
    fs::write(dir.join("memory"), b"m").unwrap();
    Ok(())
}

fn names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn buckets_and_env() {
    assert_eq!(slot_bucket(0), Some(4));
    assert_eq!(slot_bucket(4), Some(4));
    assert_eq!(slot_bucket(5), Some(8));
    assert_eq!(slot_bucket(16), Some(16));
    assert_eq!(slot_bucket(17), None);
    assert_eq!(StartMode::choose(true), StartMode::Cold);
}

#[test]
fn keys_follow_every_input() {
    let a = inputs(256);
    assert_eq!(a.key(), inputs(256).key());
    assert_eq!(a.key().len(), 16);
    assert_ne!(a.key(), inputs(512).key());
    let mut b = a.clone();
    b.kernel_sha256 = "11".repeat(32);
    assert_ne!(a.key(), b.key());
    let mut c = a.clone();
    c.net_mtu = Some(65520);
    assert_ne!(a.key(), c.key());
}

#[test]
fn built_once_then_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::new(dir.path().join("t"));
    let i = inputs(256);
    let t = store.ensure(&i, build_ok).unwrap();
    assert!(t.files().state.is_file() && t.files().memory.is_file());
    let again = store
        .ensure(&i, |_| -> Result<(), TemplateError> {
            panic!("must not rebuild")
        })
        .unwrap();
    assert_eq!(again.dir, t.dir);
    assert_eq!(store.list().unwrap().len(), 1);
    // Only the template and its lock: no staging directory left.
    assert_eq!(
        names(store.root()),
        vec![t.key.clone(), format!("{}.lock", t.key)]
    );
}

#[test]
fn failed_or_killed_builds_leave_no_template() {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::new(dir.path().join("t"));
    let i = inputs(256);
    let err = store.ensure(&i, |d| {
        fs::write(d.join("state"), b"half").unwrap();
        Err(TemplateError::NotFound("boom".into()))
    });
    assert!(err.is_err());
    assert!(store.find(&i).is_none());
    // A build killed with -9 leaves its staging directory and maybe a
    // directory without inputs.json; neither is a template, and the next
    // build removes both.
    let key = i.key();
    fs::create_dir_all(store.root().join(format!(".{key}.staging-dead"))).unwrap();
    fs::create_dir_all(store.root().join(&key)).unwrap();
    fs::write(store.root().join(&key).join("state"), b"half").unwrap();
    assert!(store.find(&i).is_none());
    assert!(store.list().unwrap().is_empty());
    let t = store.ensure(&i, build_ok).unwrap();
    assert_eq!(fs::read(t.files().state).unwrap(), b"s");
    assert_eq!(
        names(store.root()),
        vec![key.clone(), format!("{key}.lock")]
    );
}

#[test]
fn discard_remove_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::new(dir.path().join("t"));
    let a = store.ensure(&inputs(256), build_ok).unwrap();
    let b = store.ensure(&inputs(512), build_ok).unwrap();
    store.discard(&a).unwrap();
    assert!(store.find(&inputs(256)).is_none());
    assert!(matches!(
        store.remove("zz"),
        Err(TemplateError::NotFound(_))
    ));
    assert!(matches!(store.remove(""), Err(TemplateError::NotFound(_))));
    assert_eq!(store.remove(&b.key[..6]).unwrap().key, b.key);
    store.ensure(&inputs(256), build_ok).unwrap();
    let pruned = store.prune().unwrap();
    assert_eq!(pruned.len(), 1);
    assert!(
        pruned[0].1 > 0,
        "the space a pruned template took is counted"
    );
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_template_with_other_inputs_under_the_key_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::new(dir.path().join("t"));
    let i = inputs(256);
    let t = store.ensure(&i, build_ok).unwrap();
    let mut other = i.clone();
    other.vcpus = 2;
    fs::write(t.dir.join(INPUTS_FILE), serde_json::to_vec(&other).unwrap()).unwrap();
    assert!(store.find(&i).is_none());
}

#[test]
fn kernel_digest_is_remembered_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::new(dir.path().join("t"));
    let kernel = dir.path().join("vmlinux");
    fs::write(&kernel, b"kernel one").unwrap();
    let d1 = kernel_digest(&store, &kernel).unwrap();
    assert_eq!(d1, hex::encode(Sha256::digest(b"kernel one")));
    assert_eq!(kernel_digest(&store, &kernel).unwrap(), d1);
    fs::write(&kernel, b"kernel two, longer").unwrap();
    let d2 = kernel_digest(&store, &kernel).unwrap();
    assert_eq!(d2, hex::encode(Sha256::digest(b"kernel two, longer")));
}
