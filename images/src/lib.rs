//! The image store: content-addressed blobs, image references, registry
//! client, docker/OCI import and export, EROFS layer disks.
