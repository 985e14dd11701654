//! Targets for the host's parsers of untrusted bytes.

use husk_protocol::{decode, encode, FrameDecoder};
use images::layer::extract::extract;
use images::layer::Mode;
use images::Reference;

/// The agent protocol as either side reads it: whole-buffer [`decode`]
/// and the incremental [`FrameDecoder`] fed in pieces must agree, and a
/// decoded message must encode and decode back to itself.
pub fn protocol_frames(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode(rest) {
        whole.push(msg);
        rest = &rest[used..];
    }
    let mut decoder = FrameDecoder::new();
    let mut pieces = Vec::new();
    let step = usize::from(split).max(1);
    'feed: for chunk in data.chunks(step) {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => pieces.push(msg),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(pieces, whole, "incremental and whole decoding differ");
    for msg in whole {
        if let Ok(bytes) = encode(&msg) {
            let again = decode(&bytes).expect("re-encoded message decodes");
            assert_eq!(again.map(|(m, _)| m), Some(msg), "round trip");
        }
    }
}

/// The Dockerfile parser (instructions, continuations, quoting, heredocs).
pub fn dockerfile(data: &[u8]) {
    if let Ok(file) = builder::dockerfile::parse(data, "Dockerfile") {
        let _ = file.stage_index("x");
    }
}

/// Image references: whatever parses prints back to a reference that
/// parses to the same value.
pub fn image_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = text.parse::<Reference>() else {
        return;
    };
    let printed = reference.to_string();
    let again: Reference = printed.parse().expect("a printed reference parses");
    assert_eq!(again, reference, "{text:?} -> {printed:?}");
    let _ = reference.familiar_tagged();
    let _ = reference.familiar_name();
}

/// Registry documents: manifest, image config, index (and the platform
/// pick).
pub fn image_documents(data: &[u8]) {
    let _ = images::image::parse_manifest(data);
    let _ = images::image::parse_config(data);
    if let Ok(index) = serde_json::from_slice::<oci_spec::image::ImageIndex>(data) {
        let _ = images::image::pick_platform(&index);
    }
}

/// Layer tars: the check a RUN step's tar from the guest goes through,
/// and extraction in both modes, bounded to 1 MiB of content.
pub fn layer_tar(data: &[u8]) {
    let _ = images::layer::check(data, 1 << 20);
    for mode in [Mode::Overlay, Mode::Apply] {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = extract(data, dir.path(), mode, 1 << 20);
    }
}
