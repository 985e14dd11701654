//! The image store: content-addressed blobs, image references, registry
//! client, docker/OCI import and export, EROFS layer disks.
//!
//! Entry points for the rest of husk:
//! - [`Store::open`], [`Store::resolve`] → [`Image`] (config via
//!   [`Image::runtime_config`], layers and [`Image::diff_ids`]);
//! - [`Store::layer_disks`] → the ordered EROFS disks to attach;
//! - [`Store::commit_layer`] → a new image from a base, a layer tar and a config;
//! - [`Store::commit`] / [`Store::unrecorded_image`] → untagged build steps
//!   (a layer or a config-only change), recorded later with [`Store::add_image`];
//! - [`archive::load`] / [`archive::save`], [`registry::pull`] / [`registry::push`].

pub mod archive;
pub mod build;
pub mod compress;
pub mod digest;
pub mod history;
pub mod image;
pub mod layer;
pub mod reference;
pub mod registry;
pub mod store;
pub mod time;

pub use build::NewImage;
pub use digest::Digest;
pub use image::{Image, Layer, RuntimeConfig};
pub use layer::{LayerDisk, LayerError};
pub use reference::Reference;
pub use store::{Store, StoreError, DEFAULT_ROOT};
