//! What every dict daemon's `main` shares: the command line of the
//! daemons we replace (`NAME SOCKET_PATH CONFIG_PATH`) and serving until
//! SIGTERM or SIGINT.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::handler::DictHandler;
use crate::listener::{SocketOptions, bind};
use crate::server::{ServerLimits, serve};

/// Positional arguments as in the Python daemons, plus optional socket
/// settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DictDaemonArgs {
    /// Unix socket to listen on (Dovecot's `proxy:<path>:<name>` dict URI).
    pub socket_path: PathBuf,
    /// The relay's chatmail.ini.
    pub config_path: PathBuf,
    /// Octal file mode of the socket (owner and group bits only). The
    /// Dovecot processes that use the dict run as the socket's owner
    /// (vmail) or root; no other local user may connect.
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    pub socket_mode: u32,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode such as 660"))?;
    if mode & 0o007 != 0 {
        // The dicts hand out password hashes, create accounts and set
        // push tokens: every local user (a web server, a CGI script)
        // could do the same.
        return Err(format!(
            "{text} lets every local user connect; use 660 or 600"
        ));
    }
    Ok(mode)
}

/// Binds the socket and serves `handler` until SIGTERM or SIGINT.
pub fn run(args: &DictDaemonArgs, handler: impl DictHandler) -> io::Result<()> {
    run_with(args, || Ok(handler)).map_err(io::Error::other)
}

/// As [`run`], with the handler made inside the runtime (for handlers
/// that start background tasks), before the socket is bound.
pub fn run_with<H: DictHandler>(
    args: &DictDaemonArgs,
    make_handler: impl FnOnce() -> anyhow::Result<H>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let handler = make_handler()?;
        let options = SocketOptions {
            mode: args.socket_mode,
            ..SocketOptions::default()
        };
        let listener = bind(&args.socket_path, options)?;
        tracing::info!(socket = %args.socket_path.display(), "listening");
        serve(
            listener,
            Arc::new(handler),
            ServerLimits::default(),
            chatmail_daemon::shutdown_signal(),
        )
        .await;
        tracing::info!("stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_mode;

    #[test]
    fn socket_modes() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("666").is_err(), "world-connectable");
        assert!(parse_mode("662").is_err(), "world-writable");
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("1777").is_err());
    }
}
