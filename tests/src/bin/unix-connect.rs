//! Tries to connect to a unix socket and says how that went, for tests
//! that run it as another user: exit status 0 when connected, the errno
//! (13 for EACCES) when refused, 1 for anything else.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: unix-connect SOCKET_PATH");
        return ExitCode::FAILURE;
    };
    match UnixStream::connect(&path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", path.to_string_lossy());
            let errno = error
                .raw_os_error()
                .and_then(|errno| u8::try_from(errno).ok());
            ExitCode::from(errno.unwrap_or(1))
        }
    }
}
