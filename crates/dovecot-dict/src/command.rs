//! One client line of the dict protocol, decoded. Pure: no I/O.

use crate::escape::{self, DanglingEscape};

/// Iteration flags as Dovecot sends them (`enum dict_iterate_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IterateFlags(pub u32);

impl IterateFlags {
    pub const RECURSE: u32 = 0x01;
    pub const SORT_BY_KEY: u32 = 0x02;
    pub const SORT_BY_VALUE: u32 = 0x04;
    pub const NO_VALUE: u32 = 0x08;
    pub const EXACT_KEY: u32 = 0x10;
    pub const ASYNC: u32 = 0x20;

    #[must_use]
    pub fn contains(self, flag: u32) -> bool {
        self.0 & flag == flag
    }
}

/// A decoded client command. Field names follow Dovecot's `dict-client.h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `H<major>\t<minor>\t<value type>\t<user>\t<dict name>`; no reply.
    Hello {
        major: u32,
        minor: u32,
        user: String,
        dict_name: String,
    },
    /// `L<key>[\t<user>]`
    Lookup { key: String, user: String },
    /// `I<flags>\t<max rows>\t<path>...[\t<user>]`
    Iterate {
        flags: IterateFlags,
        max_rows: u64,
        paths: Vec<String>,
        user: String,
    },
    /// `B<id>[\t<user>]`; no reply.
    Begin { id: u32, user: String },
    /// `C<id>`, or `D<id>` for the asynchronous form.
    Commit { id: u32, asynchronous: bool },
    /// `R<id>`; no reply.
    Rollback { id: u32 },
    /// `S<id>\t<key>\t<value>`; no reply.
    Set { id: u32, key: String, value: String },
    /// `U<id>\t<key>`; no reply.
    Unset { id: u32, key: String },
    /// `P<id>\t<key>\t<value>`; no reply.
    Append { id: u32, key: String, value: String },
    /// `A<id>\t<key>\t<diff>`; no reply.
    AtomicInc { id: u32, key: String, diff: i64 },
    /// `T<id>\t<secs>\t<nsecs>`; no reply.
    Timestamp { id: u32, secs: i64, nsecs: u32 },
    /// `V<id>\t<hide>`; no reply.
    HideLogValues { id: u32, hide: bool },
}

/// Why a line is not a command we can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty line")]
    Empty,
    #[error("unknown command {0:?}")]
    Unknown(char),
    #[error("malformed {command:?} command: {reason}")]
    Malformed { command: char, reason: &'static str },
}

impl CommandError {
    /// Whether the client waits for a reply to the refused line, so that a
    /// refusal can be answered with `F` without the reply stream getting
    /// out of step. For other lines the only safe move is to disconnect.
    #[must_use]
    pub fn expects_reply(&self) -> bool {
        match self {
            Self::Malformed { command, .. } => command_expects_reply(*command),
            Self::Empty | Self::Unknown(_) => false,
        }
    }
}

fn command_expects_reply(letter: char) -> bool {
    matches!(letter, 'L' | 'I' | 'C' | 'D')
}

impl Command {
    /// Decodes one line, without its trailing LF.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        let mut chars = line.chars();
        let letter = chars.next().ok_or(CommandError::Empty)?;
        let args = chars.as_str();
        let malformed = |reason| CommandError::Malformed {
            command: letter,
            reason,
        };
        let fields = escape::split_fields(args)
            .map_err(|DanglingEscape| malformed("bad escape sequence"))?;
        let mut fields = Fields {
            inner: fields.into_iter(),
            malformed,
        };
        let command = match letter {
            'H' => {
                let major = fields.number("bad major version")?;
                let minor = fields.number("bad minor version")?;
                let _value_type: u32 = fields.number("bad value type")?;
                // Later protocol versions may add fields; they are not ours.
                return Ok(Self::Hello {
                    major,
                    minor,
                    user: fields.optional(),
                    dict_name: fields.optional(),
                });
            }
            'L' => Self::Lookup {
                key: fields.required("missing key")?,
                user: fields.optional(),
            },
            'I' => {
                let flags = IterateFlags(fields.number("bad flags")?);
                let max_rows = fields.number("bad row limit")?;
                let mut rest: Vec<String> = fields.inner.by_ref().collect();
                // Dovecot 2.3.17+ appends the user after the path.
                let user = if rest.len() >= 2 {
                    rest.pop().unwrap_or_default()
                } else {
                    String::new()
                };
                if rest.is_empty() {
                    return Err(malformed("missing path"));
                }
                return Ok(Self::Iterate {
                    flags,
                    max_rows,
                    paths: rest,
                    user,
                });
            }
            'B' => Self::Begin {
                id: fields.number("bad transaction id")?,
                user: fields.optional(),
            },
            'C' | 'D' => Self::Commit {
                id: fields.number("bad transaction id")?,
                asynchronous: letter == 'D',
            },
            'R' => Self::Rollback {
                id: fields.number("bad transaction id")?,
            },
            'S' | 'P' => {
                let id = fields.number("bad transaction id")?;
                let key = fields.required("missing key")?;
                let value = fields.required("missing value")?;
                if letter == 'S' {
                    Self::Set { id, key, value }
                } else {
                    Self::Append { id, key, value }
                }
            }
            'U' => Self::Unset {
                id: fields.number("bad transaction id")?,
                key: fields.required("missing key")?,
            },
            'A' => Self::AtomicInc {
                id: fields.number("bad transaction id")?,
                key: fields.required("missing key")?,
                diff: fields.number("bad difference")?,
            },
            'T' => Self::Timestamp {
                id: fields.number("bad transaction id")?,
                secs: fields.number("bad seconds")?,
                nsecs: fields.number("bad nanoseconds")?,
            },
            'V' => Self::HideLogValues {
                id: fields.number("bad transaction id")?,
                hide: fields.required("missing flag")? == "yes",
            },
            other => return Err(CommandError::Unknown(other)),
        };
        fields.finish()?;
        Ok(command)
    }
}

/// The remaining fields of a line, consumed in order.
struct Fields<F> {
    inner: std::vec::IntoIter<String>,
    malformed: F,
}

impl<F: Fn(&'static str) -> CommandError> Fields<F> {
    fn required(&mut self, reason: &'static str) -> Result<String, CommandError> {
        self.inner.next().ok_or_else(|| (self.malformed)(reason))
    }

    fn optional(&mut self) -> String {
        self.inner.next().unwrap_or_default()
    }

    fn number<T: std::str::FromStr>(&mut self, reason: &'static str) -> Result<T, CommandError> {
        self.required(reason)?
            .parse()
            .map_err(|_| (self.malformed)(reason))
    }

    fn finish(mut self) -> Result<(), CommandError> {
        match self.inner.next() {
            None => Ok(()),
            Some(_) => Err((self.malformed)("too many fields")),
        }
    }
}
