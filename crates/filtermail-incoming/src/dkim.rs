//! Strict DKIM: a message from a domain address must carry at least one
//! valid DKIM signature made by exactly that domain. Signatures by other
//! domains (mailing lists, forwarders) neither help nor hurt.

use std::num::NonZeroUsize;

use chatmail_dns::TokioResolver;
use mail_auth::common::crypto::Algorithm;
use mail_auth::common::resolver::ToFqdn as _;
use mail_auth::common::verify::VerifySignature as _;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters};

use crate::dkim_key::MessageKeys;
use crate::key_cache::KeyCache;

/// Aligned signatures checked per message; each may cost a DNS lookup.
const MAX_ALIGNED_SIGNATURES: usize = 5;
/// Keys cached: far more than the relays a chatmail relay talks to, small
/// enough that a flood of made-up selectors costs little memory.
const KEY_CACHE_ENTRIES: NonZeroUsize = NonZeroUsize::new(2000).expect("non-zero");
/// Longest reason quoted in a reply.
const MAX_REASON_LEN: usize = 200;

/// Why a message failed the DKIM check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimFailure {
    /// No signature by the From domain (the detail says what there was):
    /// refuse the message.
    Missing(String),
    /// Signatures by the From domain, none of them valid: refuse it.
    Invalid(String),
    /// A key could not be fetched for a transient reason: ask the sender
    /// to try again later.
    Temporary(String),
}

pub struct DkimVerifier {
    authenticator: MessageAuthenticator,
    resolver: TokioResolver,
    keys: KeyCache,
}

impl DkimVerifier {
    #[must_use]
    pub fn new(resolver: TokioResolver) -> Self {
        Self {
            authenticator: MessageAuthenticator(resolver.clone()),
            resolver,
            keys: KeyCache::new(KEY_CACHE_ENTRIES),
        }
    }

    /// Number of keys currently cached.
    #[must_use]
    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    /// Checks that `message` has a valid signature whose d= is
    /// `from_domain` (compared ASCII case-insensitively).
    pub async fn verify(&self, message: &[u8], from_domain: &str) -> Result<(), DkimFailure> {
        let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
            return Err(DkimFailure::Invalid(
                "the message headers do not parse".into(),
            ));
        };
        let signatures = parsed.dkim_headers.len();
        parsed
            .dkim_headers
            .retain(|header| is_same_domain(&header.header.d, from_domain));
        if parsed.dkim_headers.is_empty() {
            return Err(DkimFailure::Missing(if signatures == 0 {
                String::new()
            } else {
                format!("signatures by other domains than {from_domain} only")
            }));
        }
        // RFC 6376 5.4: From must be signed; a signature of the domain
        // over other headers could be replayed under any From.
        parsed
            .dkim_headers
            .retain(|header| signs_from(&header.header.h));
        if parsed.dkim_headers.is_empty() {
            return Err(DkimFailure::Invalid(format!(
                "no signature by {from_domain} signs the From header"
            )));
        }
        parsed.dkim_headers.truncate(MAX_ALIGNED_SIGNATURES);
        let mut keys = MessageKeys::new(&self.keys);
        for header in &parsed.dkim_headers {
            let signature = &header.header;
            if signature.a == Algorithm::Ed25519Sha256 {
                let name = signature.domain_key();
                keys.prefetch(&self.resolver, &name.to_fqdn()).await;
            }
        }
        let results = self
            .authenticator
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(&keys))
            .await;
        let mut temporary = None;
        let mut invalid = None;
        for output in &results {
            // Outputs without a signature are malformed DKIM headers.
            let Some(signature) = output.signature() else {
                continue;
            };
            if !is_same_domain(&signature.d, from_domain) {
                continue;
            }
            match output.result() {
                DkimResult::Pass => return Ok(()),
                DkimResult::TempError(error) => {
                    temporary.get_or_insert_with(|| error.to_string());
                }
                DkimResult::Neutral(error)
                | DkimResult::Fail(error)
                | DkimResult::PermError(error) => {
                    invalid.get_or_insert_with(|| describe(error));
                }
                DkimResult::None => {}
            }
        }
        // A transient lookup failure may hide a valid signature: never
        // refuse for good because of it.
        if let Some(reason) = temporary {
            return Err(DkimFailure::Temporary(one_line(&reason)));
        }
        Err(DkimFailure::Invalid(one_line(
            invalid.as_deref().unwrap_or("no verifiable DKIM signature"),
        )))
    }
}

/// A reason a sender's postmaster can act on.
fn describe(error: &mail_auth::Error) -> String {
    match error {
        mail_auth::Error::Crypto(_) => {
            "the signature does not verify with the published key".into()
        }
        mail_auth::Error::Dns(_) => format!("no usable key in DNS ({error})"),
        _ => error.to_string(),
    }
}

fn signs_from(signed_headers: &[String]) -> bool {
    signed_headers
        .iter()
        .any(|name| name.trim().eq_ignore_ascii_case("from"))
}

fn is_same_domain(signing_domain: &str, from_domain: &str) -> bool {
    signing_domain
        .trim_end_matches('.')
        .eq_ignore_ascii_case(from_domain.trim_end_matches('.'))
}

/// `text` made safe for an SMTP reply line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_compare_without_case_and_root_dot() {
        assert!(is_same_domain("Example.ORG", "example.org"));
        assert!(is_same_domain("example.org.", "example.org"));
        assert!(!is_same_domain("sub.example.org", "example.org"));
        assert!(!is_same_domain("example.org", "example.org.evil"));
    }

    #[test]
    fn only_signatures_over_from_count() {
        let names = |list: &[&str]| list.iter().map(|&name| name.to_owned()).collect::<Vec<_>>();
        assert!(signs_from(&names(&["to", "From", "subject"])));
        assert!(signs_from(&names(&["from"])));
        assert!(!signs_from(&names(&["to", "subject", "from-x"])));
        assert!(!signs_from(&[]));
    }

    #[test]
    fn reasons_are_single_lines() {
        assert_eq!(one_line("a\r\nb"), "a  b");
        assert_eq!(one_line(&"x".repeat(500)).len(), MAX_REASON_LEN);
    }
}
