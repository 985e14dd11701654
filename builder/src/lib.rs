//! `husk build`: Dockerfiles to images.
//!
//! - [`dockerfile::parse`]: the parser (untrusted input; errors carry
//!   `Dockerfile:LINE`);
//! - [`build`]: the engine — stages, the build cache ([`cache`]), COPY/ADD
//!   layers written on the host ([`copy`]), RUN steps in microVMs ([`vm`])
//!   whose changes the guest agent streams out as layer tars;
//! - the result is an image in the [`images::Store`], recorded with its tags.

pub mod cache;
pub mod config;
pub mod context;
pub mod copy;
pub mod dockerfile;
mod engine;
pub mod ignore;
pub mod mount;
pub mod pattern;
pub mod rootpath;
pub mod users;
pub mod vm;

pub use engine::{build, BuildError, BuildOptions, StepError};
pub use husk_layertar::tarball;
pub use vm::VmSettings;
