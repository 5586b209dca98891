use std::path::PathBuf;

/// Why a configuration could not be rendered, written or checked.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("template {name}: {source:#}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {tool} (is it installed?): {source}")]
    ToolMissing {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}):\n{output}")]
    ToolFailed {
        tool: &'static str,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{tool} succeeded but gave no {missing}")]
    ToolGaveNothing { tool: &'static str, missing: String },
    #[error("{tool} warns:\n{warnings}")]
    ToolWarned {
        tool: &'static str,
        warnings: String,
    },
    #[error("user vmail does not exist (the chatmail-relay package creates it)")]
    NoVmailUser,
    #[error("user {0} does not exist (is its package installed?)")]
    NoUser(String),
    #[error("looking up a user: {0}")]
    UserLookup(#[source] nix::Error),
    #[error("port base {base} + {port} is above 65535")]
    PortOverflow { base: u16, port: u16 },
}
