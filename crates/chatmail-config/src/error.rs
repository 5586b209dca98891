use std::path::PathBuf;

/// Why a chatmail.ini could not be used. Every variant names the file, and
/// value errors name the key, so an operator can fix it without guessing.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid INI: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path} has no [params] section")]
    MissingSection { path: PathBuf },
    #[error("config file {path}: required key `{key}` is missing")]
    MissingKey { path: PathBuf, key: &'static str },
    #[error("config file {path}: key `{key}` has a bad value {value:?}: {reason}")]
    BadValue {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
}

/// Why an address cannot name a mailbox directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address has no '@'")]
    NoAt,
    #[error("address contains a character that is unsafe in a path")]
    UnsafeCharacter,
    #[error("address contains '..'")]
    DotDot,
    #[error("address is longer than a file name may be")]
    TooLong,
}
