//! Device tokens in `<mailbox>/metadata.json`:
//! `{"devicetoken": {"<token>": <unix time added>, ...}}`, or in the older
//! form a plain list of tokens, which is read and rewritten in the new
//! form. Every change happens under an exclusive lock on a lock file next
//! to it and is written atomically, so concurrent writers (several
//! Dovecot processes, several devices of one account) never lose a token.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use chatmail_config::{Mailboxes, write_atomic};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Map, Value};

const FILE: &str = "metadata.json";
const LOCK_FILE: &str = "metadata.json.lock";
const TOKENS_KEY: &str = "devicetoken";
/// Tokens are forgotten 90 days after they were last set.
const TOKEN_LIFETIME: i64 = 90 * 86_400;
/// A token dated further in the future than this is bogus.
const CLOCK_SKEW: i64 = 60;
/// Device tokens kept per account (the newest): every delivery notifies
/// each of them, so an account must not register without bound.
pub const MAX_TOKENS: usize = 20;

#[derive(Debug, Clone)]
pub struct TokenStore {
    mailboxes: Mailboxes,
}

/// The document as read, and whether it must be rewritten.
struct Loaded {
    document: Map<String, Value>,
    /// Tokens kept, with the time each was added.
    tokens: Vec<(String, i64)>,
    /// Legacy list form, expired tokens or a corrupt file.
    stale: bool,
    corrupt: bool,
}

fn is_valid_time(added: i64, now: i64) -> bool {
    added > now - TOKEN_LIFETIME && added < now + CLOCK_SKEW
}

fn load(path: &Path, now: i64) -> io::Result<Loaded> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    let (document, corrupt) = if text.is_empty() {
        (Map::new(), false)
    } else {
        match serde_json::from_slice::<Value>(&text) {
            Ok(Value::Object(document)) => (document, false),
            _ => (Map::new(), true),
        }
    };
    let mut stale = corrupt;
    let mut tokens = Vec::new();
    match document.get(TOKENS_KEY) {
        Some(Value::Object(map)) => {
            for (token, added) in map {
                match added.as_i64().or_else(|| added.as_f64().map(|f| f as i64)) {
                    Some(added) if is_valid_time(added, now) => tokens.push((token.clone(), added)),
                    _ => stale = true,
                }
            }
        }
        Some(Value::Array(list)) => {
            stale = true;
            tokens.extend(
                list.iter()
                    .filter_map(Value::as_str)
                    .map(|token| (token.to_owned(), now)),
            );
        }
        Some(_) => stale = true,
        None => {}
    }
    // A file from before the cap, or written by hand, is cut down too.
    if keep_newest(&mut tokens) {
        stale = true;
    }
    Ok(Loaded {
        document,
        tokens,
        stale,
        corrupt,
    })
}

impl TokenStore {
    #[must_use]
    pub fn new(mailboxes: Mailboxes) -> Self {
        Self { mailboxes }
    }

    fn dir(&self, addr: &str) -> io::Result<PathBuf> {
        let mailbox = self
            .mailboxes
            .mailbox(addr)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
        Ok(mailbox.dir().to_owned())
    }

    /// The valid tokens of `addr`; rewrites the file when it holds the
    /// legacy form, expired tokens or garbage.
    pub fn tokens(&self, addr: &str, now: i64) -> io::Result<Vec<String>> {
        let dir = self.dir(addr)?;
        let loaded = load(&dir.join(FILE), now)?;
        if loaded.stale {
            return self.modify(addr, now, |_| false);
        }
        Ok(loaded.tokens.into_iter().map(|(token, _)| token).collect())
    }

    /// Adds `token` (or renews its time); beyond [`MAX_TOKENS`] the
    /// oldest go.
    pub fn add(&self, addr: &str, token: &str, now: i64) -> io::Result<()> {
        self.modify(addr, now, |tokens| {
            tokens.retain(|(known, _)| known != token);
            tokens.push((token.to_owned(), now));
            keep_newest(tokens);
            true
        })
        .map(drop)
    }

    /// Removes `token`; `Ok(false)` when it was not there.
    pub fn remove(&self, addr: &str, token: &str, now: i64) -> io::Result<bool> {
        let mut found = false;
        self.modify(addr, now, |tokens| {
            let before = tokens.len();
            tokens.retain(|(known, _)| known != token);
            found = tokens.len() != before;
            found
        })?;
        Ok(found)
    }

    /// Applies `change` to the tokens under the lock; writes when it says
    /// so or the file was stale. Returns the tokens after the change.
    fn modify(
        &self,
        addr: &str,
        now: i64,
        change: impl FnOnce(&mut Vec<(String, i64)>) -> bool,
    ) -> io::Result<Vec<String>> {
        let dir = self.dir(addr)?;
        fs::create_dir_all(&dir)?;
        let _lock = lock(&dir.join(LOCK_FILE))?;
        let path = dir.join(FILE);
        let mut loaded = load(&path, now)?;
        let changed = change(&mut loaded.tokens);
        if changed || loaded.stale {
            if loaded.corrupt {
                tracing::warn!("an account's metadata.json was not valid JSON; replacing it");
                tracing::debug!(path = %path.display(), "replaced corrupt metadata");
            }
            let tokens: Map<String, Value> = loaded
                .tokens
                .iter()
                .map(|(token, added)| (token.clone(), Value::from(*added)))
                .collect();
            loaded
                .document
                .insert(TOKENS_KEY.to_owned(), Value::Object(tokens));
            let text =
                serde_json::to_vec(&Value::Object(loaded.document)).map_err(io::Error::other)?;
            write_atomic(&path, &text)?;
        }
        Ok(loaded.tokens.into_iter().map(|(token, _)| token).collect())
    }
}

/// Drops the oldest tokens beyond [`MAX_TOKENS`]; says whether any went.
fn keep_newest(tokens: &mut Vec<(String, i64)>) -> bool {
    if tokens.len() <= MAX_TOKENS {
        return false;
    }
    // Stable: of tokens added in the same second, the later added stay.
    tokens.sort_by_key(|(_, added)| *added);
    let excess = tokens.len() - MAX_TOKENS;
    tokens.drain(..excess);
    true
}

/// An exclusive lock held until dropped. flock locks belong to the open
/// file, so threads of one process exclude each other as processes do.
fn lock(path: &Path) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(Mailboxes::new(dir.path()));
        (dir, store)
    }

    fn file(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("a@x.org").join(FILE)
    }

    #[test]
    fn tokens_per_account_are_capped_oldest_first() {
        let (dir, store) = store();
        for n in 0..MAX_TOKENS + 5 {
            let added = NOW - 1000 + i64::try_from(n).unwrap();
            store.add("a@x.org", &format!("t{n}"), added).unwrap();
        }
        let tokens = store.tokens("a@x.org", NOW).unwrap();
        assert_eq!(tokens.len(), MAX_TOKENS);
        assert!(!tokens.contains(&"t4".to_owned()), "the oldest went");
        assert!(tokens.contains(&"t5".to_owned()));
        assert!(tokens.contains(&format!("t{}", MAX_TOKENS + 4)));
        // A file that holds more (older daemon, edited by hand) is cut.
        let many: Map<String, Value> = (0..100)
            .map(|n| (format!("old{n}"), Value::from(NOW - 100 + n)))
            .collect();
        let document = serde_json::json!({ "devicetoken": many });
        fs::write(file(&dir), document.to_string()).unwrap();
        assert_eq!(store.tokens("a@x.org", NOW).unwrap().len(), MAX_TOKENS);
        let text = fs::read_to_string(file(&dir)).unwrap();
        assert!(!text.contains("\"old0\""), "rewritten: {text}");
    }

    #[test]
    fn add_lookup_remove() {
        let (dir, store) = store();
        store.add("a@x.org", "t1", NOW).unwrap();
        store.add("a@x.org", "t2", NOW).unwrap();
        store.add("a@x.org", "t1", NOW + 5).unwrap();
        let mut tokens = store.tokens("a@x.org", NOW).unwrap();
        tokens.sort();
        assert_eq!(tokens, ["t1", "t2"]);
        assert!(store.remove("a@x.org", "t1", NOW).unwrap());
        assert!(!store.remove("a@x.org", "t1", NOW).unwrap());
        assert_eq!(store.tokens("a@x.org", NOW).unwrap(), ["t2"]);
        let json: Value = serde_json::from_slice(&fs::read(file(&dir)).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"devicetoken": {"t2": NOW}}));
    }

    #[test]
    fn expired_and_future_tokens_are_dropped() {
        let (dir, store) = store();
        fs::create_dir(dir.path().join("a@x.org")).unwrap();
        let old = NOW - TOKEN_LIFETIME;
        let json = serde_json::json!({"devicetoken": {
            "old": old, "fresh": old + 1, "future": NOW + CLOCK_SKEW, "soon": NOW + CLOCK_SKEW - 1
        }, "other": 1});
        fs::write(file(&dir), json.to_string()).unwrap();
        let mut tokens = store.tokens("a@x.org", NOW).unwrap();
        tokens.sort();
        assert_eq!(tokens, ["fresh", "soon"]);
        let json: Value = serde_json::from_slice(&fs::read(file(&dir)).unwrap()).unwrap();
        assert_eq!(json["devicetoken"].as_object().unwrap().len(), 2);
        assert_eq!(json["other"], 1, "other keys are kept");
    }

    #[test]
    fn legacy_list_is_read_and_rewritten() {
        let (dir, store) = store();
        fs::create_dir(dir.path().join("a@x.org")).unwrap();
        fs::write(file(&dir), r#"{"devicetoken": ["t1", "t2"]}"#).unwrap();
        assert_eq!(store.tokens("a@x.org", NOW).unwrap(), ["t1", "t2"]);
        let json: Value = serde_json::from_slice(&fs::read(file(&dir)).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"devicetoken": {"t1": NOW, "t2": NOW}})
        );
    }

    #[test]
    fn corrupt_file_counts_as_empty_and_is_replaced() {
        let (dir, store) = store();
        fs::create_dir(dir.path().join("a@x.org")).unwrap();
        fs::write(file(&dir), "{not json").unwrap();
        assert!(store.tokens("a@x.org", NOW).unwrap().is_empty());
        assert_eq!(
            fs::read_to_string(file(&dir)).unwrap(),
            r#"{"devicetoken":{}}"#
        );
        store.add("a@x.org", "t1", NOW).unwrap();
        assert_eq!(store.tokens("a@x.org", NOW).unwrap(), ["t1"]);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let (_dir, store) = store();
        std::thread::scope(|scope| {
            for thread in 0..5 {
                let store = &store;
                scope.spawn(move || {
                    // Each token set many times, as devices renew them.
                    for round in 0..10 {
                        for n in 0..4 {
                            store
                                .add("a@x.org", &format!("t{thread}-{n}"), NOW - 10 + round)
                                .unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(store.tokens("a@x.org", NOW).unwrap().len(), MAX_TOKENS);
    }

    #[test]
    fn unsafe_addresses_are_refused() {
        let (_dir, store) = store();
        assert!(store.add("../etc", "t", NOW).is_err());
        assert!(store.tokens("a/b@x.org", NOW).is_err());
    }
}
