//! Hostile layer tars, as a guest could send them, are refused with a
//! clear error; a normal RUN layer passes.

use super::*;

/// One raw entry: the name is written into the header as given (the tar
/// crate's path setters would refuse the hostile ones).
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8], link: &str) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

type Entry<'a> = (&'a str, tar::EntryType, &'a [u8], &'a str);

fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        raw(&mut b, name, *kind, data, link);
    }
    b.into_inner().unwrap()
}

use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

fn err(entries: &[Entry<'_>]) -> String {
    check(&layer(entries)[..], 1 << 20)
        .expect_err("refused")
        .to_string()
}

#[test]
fn a_normal_run_layer_passes() {
    let ok = check(
        &layer(&[
            ("etc", D, b"", ""),
            ("etc/.wh.gone.txt", F, b"", ""),
            ("etc/new", F, b"new\n", ""),
            ("etc/new2", H, b"", "etc/new"),
            ("etc/link", S, b"", "/etc/new"),
            ("opq", D, b"", ""),
            ("opq/.wh..wh..opq", F, b"", ""),
            ("bin", S, b"", "/usr/bin"),
            ("usr/bin/x", F, b"x", ""),
        ])[..],
        1 << 20,
    )
    .unwrap();
    assert_eq!(
        ok,
        Checked {
            entries: 9,
            bytes: 5
        }
    );
}

#[test]
fn hostile_layers_are_refused_with_a_clear_error() {
    let e = err(&[("../escape", F, b"x", "")]);
    assert_eq!(e, "unsafe path in layer: \"../escape\"");
    let e = err(&[("a/../../escape", F, b"x", "")]);
    assert!(e.starts_with("unsafe path in layer"), "{e}");
    let e = err(&[("/etc/passwd", F, b"x", "")]);
    assert!(e.starts_with("unsafe path in layer"), "{e}");
    // Writing through a symlink of the layer (absolute or relative).
    let e = err(&[("etc", S, b"", "/etc"), ("etc/passwd", F, b"x", "")]);
    assert_eq!(
        e,
        "path \"etc\" in layer goes through a non-directory (symlink?)"
    );
    let e = err(&[("up", S, b"", "../.."), ("up/x/y", F, b"x", "")]);
    assert!(e.contains("non-directory"), "{e}");
    let e = err(&[("f", F, b"", ""), ("f/x", F, b"x", "")]);
    assert!(e.contains("non-directory"), "{e}");
    // Hard links must stay inside the layer, to earlier files.
    let e = err(&[("h", H, b"", "../../etc/shadow")]);
    assert!(e.contains("target escapes the layer"), "{e}");
    let e = err(&[("h", H, b"", "/etc/shadow")]);
    assert!(e.contains("target escapes the layer"), "{e}");
    let e = err(&[("h", H, b"", "later"), ("later", F, b"", "")]);
    assert!(e.contains("target is not in the layer"), "{e}");
    let e = err(&[("d", D, b"", ""), ("h", H, b"", "d")]);
    assert!(e.contains("target is a directory"), "{e}");
    // Whiteouts name one entry.
    let e = err(&[("d/.wh...", F, b"", "")]);
    assert!(e.starts_with("unsafe path in layer"), "{e}");
}

#[test]
fn sizes_entries_and_truncation_are_bounded() {
    let big = vec![0u8; 100];
    let e = check(&layer(&[("a", F, &big, ""), ("b", F, &big, "")])[..], 150).unwrap_err();
    assert_eq!(e.to_string(), "layer unpacks to more than 150 bytes");
    let many: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry<'_>> = many.iter().map(|n| (n.as_str(), F, &b""[..], "")).collect();
    let e = check_bounded(&layer(&entries)[..], 1 << 20, 4).unwrap_err();
    assert_eq!(e.to_string(), "layer has more than 4 entries");
    assert!(check_bounded(&layer(&entries[..4])[..], 1 << 20, 4).is_ok());
    let whole = layer(&[("a", F, &big, "")]);
    let e = check(&whole[..600], 1 << 20).unwrap_err();
    assert!(
        matches!(e, ExtractError::Truncated(_) | ExtractError::Tar(_)),
        "{e}"
    );
}
