//! The dict keys Dovecot's dict passdb/userdb send (see
//! dovecot/auth.conf): `passdb/<%E password>"<%E user>` and
//! `userdb/<%E user>`, with a `shared/` prefix on the wire.

/// A decoded lookup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKey {
    Passdb { password: String, user: String },
    Userdb { user: String },
}

impl AuthKey {
    /// Decodes a key, or `None` for keys that are not ours.
    #[must_use]
    pub fn parse(key: &str) -> Option<Self> {
        let key = key.strip_prefix("shared/").unwrap_or(key);
        if let Some(user) = key.strip_prefix("userdb/") {
            return Some(Self::Userdb {
                user: unescape(user),
            });
        }
        let rest = key.strip_prefix("passdb/")?;
        let (password, user) = split_at_unescaped_quote(rest)?;
        Some(Self::Passdb {
            password: unescape(password),
            user: unescape(user),
        })
    }
}

/// The iteration path that lists every account.
#[must_use]
pub fn is_userdb_listing(path: &str) -> bool {
    matches!(path, "shared/userdb/" | "userdb/")
}

/// Reverses Dovecot's `%E` modifier, which puts a backslash before `\`,
/// `"` and `'`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits at the first double quote that is not escaped.
fn split_at_unescaped_quote(text: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some((text.get(..at)?, text.get(at + 1..)?)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{AuthKey, is_userdb_listing};

    fn passdb(password: &str, user: &str) -> Option<AuthKey> {
        Some(AuthKey::Passdb {
            password: password.into(),
            user: user.into(),
        })
    }

    #[test]
    fn userdb_keys() {
        assert_eq!(
            AuthKey::parse("shared/userdb/abc@example.org"),
            Some(AuthKey::Userdb {
                user: "abc@example.org".into()
            })
        );
        assert_eq!(
            AuthKey::parse("userdb/a\\\"b@[127.0.0.1]"),
            Some(AuthKey::Userdb {
                user: "a\"b@[127.0.0.1]".into()
            })
        );
    }

    #[test]
    fn passdb_keys_split_at_the_first_unescaped_quote() {
        assert_eq!(
            AuthKey::parse("shared/passdb/secret123\"user@example.org"),
            passdb("secret123", "user@example.org")
        );
        // Quotes, apostrophes and backslashes inside the password.
        assert_eq!(
            AuthKey::parse(r#"shared/passdb/a\"b\'c\\d"user@x"#),
            passdb(r#"a"b'c\d"#, "user@x")
        );
        // A password ending in a backslash.
        assert_eq!(AuthKey::parse(r#"passdb/pw\\"u@x"#), passdb("pw\\", "u@x"));
        // No password (a non-plaintext mechanism).
        assert_eq!(AuthKey::parse("passdb/\"u@x"), passdb("", "u@x"));
        // A quote in the user part stays in the user.
        assert_eq!(AuthKey::parse("passdb/pw\"u\"x@y"), passdb("pw", "u\"x@y"));
    }

    #[test]
    fn foreign_and_broken_keys() {
        for key in [
            "shared/last-login/x",
            "priv/passdb/x\"y",
            "passdb/no-quote",
            "",
            "shared/",
        ] {
            assert_eq!(AuthKey::parse(key), None, "{key:?}");
        }
    }

    #[test]
    fn listing_paths() {
        assert!(is_userdb_listing("shared/userdb/"));
        assert!(is_userdb_listing("userdb/"));
        assert!(!is_userdb_listing("shared/passdb/"));
    }
}
