//! `husk history`: an image's history entries (from its config), newest
//! first, each with the size of the layer it made.

use crate::image::Image;

/// One step of an image's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When it was made (Unix seconds), if recorded.
    pub created: Option<i64>,
    /// The command that made it.
    pub created_by: String,
    /// Its comment.
    pub comment: String,
    /// The size of the layer it made (its blob); 0 for a config-only step.
    pub size: u64,
    /// Whether this is the image's newest step (the one its ID names).
    pub top: bool,
}

/// The history of `image`, newest first. Entries that made a layer are
/// paired with the image's layers in order; an image without history
/// (some registries strip it) gets one entry per layer.
pub fn history(image: &Image) -> Vec<HistoryEntry> {
    let mut layers = image.layers.iter();
    let mut out: Vec<HistoryEntry> = match image.config.history() {
        Some(h) if !h.is_empty() => h
            .iter()
            .map(|e| {
                let empty = e.empty_layer().unwrap_or(false);
                HistoryEntry {
                    created: e.created().as_deref().and_then(crate::time::parse_rfc3339),
                    created_by: e.created_by().clone().unwrap_or_default(),
                    comment: e.comment().clone().unwrap_or_default(),
                    size: if empty {
                        0
                    } else {
                        layers.next().map_or(0, |l| l.size)
                    },
                    top: false,
                }
            })
            .collect(),
        _ => layers
            .map(|l| HistoryEntry {
                created: None,
                created_by: String::new(),
                comment: String::new(),
                size: l.size,
                top: false,
            })
            .collect(),
    };
    out.reverse();
    if let Some(first) = out.first_mut() {
        first.top = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewImage, Reference, Store};
    use serde_json::json;

    #[test]
    fn history_lists_steps_newest_first_with_their_layer_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = json!({"Cmd": ["sh"]});
        let layer = {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            b.append_data(&mut h, "f", &b"abc"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let base = store
            .commit(
                &NewImage {
                    base: None,
                    config: &config,
                    created_by: "ADD f /",
                    author: None,
                    comment: None,
                },
                Some(&mut &layer[..]),
            )
            .unwrap();
        let top = store
            .commit(
                &NewImage {
                    base: Some(&base),
                    config: &config,
                    created_by: "/bin/sh -c #(nop)  CMD [\"sh\"]",
                    author: None,
                    comment: Some("a message"),
                },
                None,
            )
            .unwrap();
        let tag: Reference = "h:1".parse().unwrap();
        let top = store
            .add_image(
                &top.manifest_digest,
                crate::image::OCI_MANIFEST,
                &[tag],
                None,
            )
            .unwrap();
        let h = history(&top);
        assert_eq!(h.len(), 2);
        assert!(h[0].top && !h[1].top);
        assert_eq!(h[0].created_by, "/bin/sh -c #(nop)  CMD [\"sh\"]");
        assert_eq!(h[0].comment, "a message");
        assert_eq!(h[0].size, 0);
        assert_eq!(h[1].created_by, "ADD f /");
        assert_eq!(h[1].size, layer.len() as u64);
        assert!(h[1].created.is_some());
    }
}
