//! Binding the dict socket the way an operator expects: a stale socket
//! from a crashed run is replaced, a live one is left alone, and the
//! listen backlog is deep enough for a login storm after a restart.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UnixListener;

/// The kernel caps this at net.core.somaxconn.
pub const DEFAULT_BACKLOG: i32 = 4096;

#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// File mode of the socket; Dovecot's processes must be able to
    /// connect, so the default lets owner and group read and write.
    pub mode: u32,
    pub backlog: i32,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            mode: 0o660,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// Binds a listening unix socket at `path`. Must be called inside a tokio
/// runtime.
pub fn bind(path: &Path, options: SocketOptions) -> io::Result<UnixListener> {
    remove_stale_socket(path)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(options.backlog)?;
    socket.set_nonblocking(true)?;
    fs::set_permissions(path, fs::Permissions::from_mode(options.mode))?;
    UnixListener::from_std(socket.into())
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if StdUnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is listening on {}", path.display()),
        ));
    }
    fs::remove_file(path)
}
