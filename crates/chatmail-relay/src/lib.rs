//! The Debian package `chatmail-relay`: no code of its own, only the
//! package description in Cargo.toml (`[package.metadata.deb]`), which
//! collects the binaries of every daemon crate, the systemd units, the
//! configuration templates and the maintainer scripts in debian/.
