//! Server lines of the dict protocol, encoded. Pure: no I/O.
//!
//! Replies are sent in command order without async ids, which every
//! Dovecot 2.3 client accepts.

use crate::escape::escape_into;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Lookup hit: `O<value>`.
    Value(String),
    /// Lookup miss: `N`.
    NotFound,
    /// Lookup failure: `F<reason>`.
    Failed(String),
    /// One iteration row: `O<key>\t<value>`.
    Row { key: String, value: String },
    /// End of a successful iteration: an empty line.
    IterationDone,
    /// End of a failed iteration: `F`.
    IterationFailed,
    /// Commit result: `O<id>` / `F<id>`, prefixed with `A` for `D` commits.
    Commit {
        id: u32,
        ok: bool,
        asynchronous: bool,
    },
}

impl Reply {
    /// Appends the reply line, LF included, to `out`.
    pub fn encode_into(&self, out: &mut String) {
        match self {
            Self::Value(value) => {
                out.push('O');
                escape_into(value, out);
            }
            Self::NotFound => out.push('N'),
            Self::Failed(reason) => {
                out.push('F');
                escape_into(reason, out);
            }
            Self::Row { key, value } => {
                out.push('O');
                escape_into(key, out);
                out.push('\t');
                escape_into(value, out);
            }
            Self::IterationDone => {}
            Self::IterationFailed => out.push('F'),
            Self::Commit {
                id,
                ok,
                asynchronous,
            } => {
                if *asynchronous {
                    out.push('A');
                }
                out.push(if *ok { 'O' } else { 'F' });
                out.push_str(&id.to_string());
            }
        }
        out.push('\n');
    }

    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }
}
