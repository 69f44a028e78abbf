//! Container filesystems: the overlay rootfs, paths resolved beneath a root, users looked up
//! inside it, artifacts, and named volumes.

pub mod artifacts;
pub mod images;
pub mod resolve;
pub mod rootfs;
pub mod unpack;
pub mod users;
pub mod volumes;
