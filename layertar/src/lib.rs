//! Layer tars in OCI form, written from one place for the host and the
//! guest: [`tarball::LayerWriter`] (entries with explicit metadata,
//! whiteouts, opaque markers, xattrs as PAX records), used by `husk build`'s
//! COPY/ADD on the host, and [`upper::write_layer`] (an overlayfs upper
//! directory as a layer), used by the guest agent to turn a RUN step's
//! changes into the layer it streams to the host.
//!
//! Only pure conversion lives here (no host-only dependencies): the agent
//! is a static binary.

pub mod tarball;
pub mod upper;
mod xattr;
