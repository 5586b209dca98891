//! Fetching DKIM keys into the cache ahead of mail-auth, so that Ed25519
//! keys are checked by ed25519-dalek: ring's Ed25519 verification took
//! about 85 µs per signature on the machines we measure, dalek's about
//! 35 µs with AVX2 and 17 µs with AVX-512 IFMA. RSA keys stay with ring,
//! which verifies them fastest.
//!
//! Only successes go into the shared cache. A failed lookup is kept for
//! the one message, in mail-auth's own words for it, so that mail-auth
//! neither asks a silent server a second time nor reads the failure
//! differently. When records come but none parses, nothing is kept and
//! mail-auth reads them itself.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chatmail_dns::TokioResolver;
use ed25519_dalek::Verifier as _;
use mail_auth::common::crypto::{
    Algorithm, CryptoError, HashContext as _, HashImpl as _, Sha256, VerifyingKey,
};
use mail_auth::common::headers::Writer as _;
use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::Canonicalization;
use mail_auth::hickory_resolver::proto::rr::{Name, RData};
use mail_auth::{Error, ResolverCache, Txt};

use crate::key_cache::KeyCache;

/// The keys one message's verification sees: the shared cache, and the
/// lookups that failed while this message was checked.
pub struct MessageKeys<'a> {
    cache: &'a KeyCache,
    failed: Vec<(Box<str>, Txt)>,
}

impl<'a> MessageKeys<'a> {
    #[must_use]
    pub fn new(cache: &'a KeyCache) -> Self {
        Self {
            cache,
            failed: Vec::new(),
        }
    }

    /// Looks up the key record `name` (a lowercase FQDN, as mail-auth
    /// names its cache entries) unless it is known, and caches its first
    /// record that parses, with an Ed25519 key in ed25519-dalek's hands.
    pub async fn prefetch(&mut self, resolver: &TokioResolver, name: &str) {
        if self.get(name).is_some() {
            return;
        }
        let Ok(query) = Name::from_str_relaxed(name) else {
            return;
        };
        let lookup = match resolver.txt_lookup(query).await {
            Ok(lookup) => lookup,
            Err(error) => {
                self.failed
                    .push((name.into(), Txt::Error(Error::from(error))));
                return;
            }
        };
        let valid_until = lookup.valid_until();
        for answer in lookup.answers() {
            let RData::TXT(txt) = &answer.data else {
                continue;
            };
            // A long key is split into several character strings.
            let record = txt.txt_data.concat();
            if let Some(key) = domain_key(&record) {
                self.insert(name.into(), Txt::DomainKey(Arc::new(key)), valid_until);
                return;
            }
        }
    }
}

impl ResolverCache<Box<str>, Txt> for MessageKeys<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.failed
            .iter()
            .find(|(failed, _)| Borrow::<Q>::borrow(failed) == name)
            .map(|(_, txt)| txt.clone())
            .or_else(|| self.cache.get(name))
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.remove(name)
    }

    fn insert(&self, name: Box<str>, txt: Txt, valid_until: Instant) {
        self.cache.insert(name, txt, valid_until);
    }
}

/// The key in `record` as mail-auth reads it (flags, revocation, key
/// type), with an Ed25519 key swapped for dalek's.
fn domain_key(record: &[u8]) -> Option<DomainKey> {
    let parsed = DomainKey::parse(record).ok()?;
    Some(match ed25519_public_key(record) {
        Some(key) => DomainKey {
            p: Box::new(Ed25519Key(key)),
            f: parsed.f,
        },
        None => parsed,
    })
}

/// The public key of a `k=ed25519` record (RFC 8463): the tags are a
/// `;`-separated list, and the base64 of `p=` may hold folding
/// whitespace. As with mail-auth, a repeated tag's last value counts.
fn ed25519_public_key(record: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
    let record = std::str::from_utf8(record).ok()?;
    let mut is_ed25519 = false;
    let mut encoded = None;
    for tag in record.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        match name.trim() {
            "k" => is_ed25519 = value.trim().eq_ignore_ascii_case("ed25519"),
            "p" => encoded = Some(value),
            _ => {}
        }
    }
    if !is_ed25519 {
        return None;
    }
    let compact: Vec<u8> = encoded?
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let bytes: [u8; 32] = STANDARD.decode(compact).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

/// An Ed25519 DKIM key: the signature is over the SHA-256 of the
/// canonicalized headers (RFC 8463 section 3).
struct Ed25519Key(ed25519_dalek::VerifyingKey);

impl Ed25519Key {
    fn verify_digest(
        &self,
        digest: &[u8],
        signature: &[u8],
        algorithm: Algorithm,
    ) -> mail_auth::Result<()> {
        if algorithm != Algorithm::Ed25519Sha256 {
            return Err(Error::Crypto(CryptoError::IncompatibleAlgorithms));
        }
        let signature = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| Error::Crypto(CryptoError::FailedVerification))?;
        self.0
            .verify(digest, &signature)
            .map_err(|_| Error::Crypto(CryptoError::FailedVerification))
    }
}

impl VerifyingKey for Ed25519Key {
    fn verify<'a>(
        &self,
        headers: &mut dyn Iterator<Item = (&'a [u8], &'a [u8])>,
        signature: &[u8],
        canonicalization: Canonicalization,
        algorithm: Algorithm,
    ) -> mail_auth::Result<()> {
        let mut hasher = Sha256::hasher();
        canonicalization.canonicalize_headers(headers, &mut hasher);
        self.verify_digest(hasher.complete().as_ref(), signature, algorithm)
    }

    fn verify_bytes(
        &self,
        input: &[u8],
        signature: &[u8],
        algorithm: Algorithm,
    ) -> mail_auth::Result<()> {
        let mut hasher = Sha256::hasher();
        hasher.write(input);
        self.verify_digest(hasher.complete().as_ref(), signature, algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    const SECRET: [u8; 32] = [7; 32];

    fn signing_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&SECRET)
    }

    fn encoded_public_key() -> String {
        STANDARD.encode(signing_key().verifying_key().as_bytes())
    }

    #[test]
    fn ed25519_keys_are_read_in_every_spelling() {
        let key = encoded_public_key();
        let (first, second) = key.split_at(20);
        for record in [
            format!("v=DKIM1; k=ed25519; p={key}"),
            format!("v=DKIM1;k=ED25519;p={first}\r\n\t{second} "),
            format!("p={key}; k = ed25519"),
        ] {
            assert_eq!(
                ed25519_public_key(record.as_bytes()),
                Some(signing_key().verifying_key()),
                "{record}"
            );
            let parsed = domain_key(record.as_bytes()).expect("a usable record");
            let input = b"to:bob@example.org\r\n";
            let mut hasher = Sha256::hasher();
            hasher.write(input);
            let signature = signing_key().sign(hasher.complete().as_ref()).to_bytes();
            parsed
                .p
                .verify_bytes(input, &signature, Algorithm::Ed25519Sha256)
                .expect("the record's key verifies");
        }
    }

    #[test]
    fn other_records_keep_mail_auths_reading() {
        let key = encoded_public_key();
        // RSA (the default key type), a broken key, a revoked key.
        assert_eq!(ed25519_public_key(format!("p={key}").as_bytes()), None);
        assert_eq!(ed25519_public_key(b"k=ed25519; p=AAAA"), None);
        assert!(domain_key(b"v=DKIM1; k=ed25519; p=").is_none());
        assert!(domain_key(b"v=DKIM2; k=ed25519; p=AAAA").is_none());
    }

    fn from_hex(text: &str) -> Vec<u8> {
        text.as_bytes()
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ASCII");
                u8::from_str_radix(pair, 16).expect("hex")
            })
            .collect()
    }

    /// Known answers from outside dalek: whichever of its backends this
    /// CPU runs (IFMA, AVX2, plain), published signatures verify and
    /// altered ones do not.
    #[test]
    fn rfc_8032_signatures_verify_and_altered_ones_do_not() {
        // RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2.
        let vectors = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                 5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                 085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (public, message, signature) in vectors {
            let public: [u8; 32] = from_hex(public).try_into().expect("32 bytes");
            let key = Ed25519Key(
                ed25519_dalek::VerifyingKey::from_bytes(&public).expect("a valid point"),
            );
            let message = from_hex(message);
            let signature = from_hex(signature);
            key.verify_digest(&message, &signature, Algorithm::Ed25519Sha256)
                .expect("the published signature verifies");
            for bit in [0, 100, 255, 256, 400, 511] {
                let mut altered = signature.clone();
                if let Some(byte) = altered.get_mut(bit / 8) {
                    *byte ^= 1 << (bit % 8);
                }
                assert!(
                    key.verify_digest(&message, &altered, Algorithm::Ed25519Sha256)
                        .is_err(),
                    "bit {bit} flipped"
                );
            }
            let mut other_message = message.clone();
            other_message.push(0);
            assert!(
                key.verify_digest(&other_message, &signature, Algorithm::Ed25519Sha256)
                    .is_err()
            );
        }
    }

    /// curve25519-dalek builds its AVX-512 IFMA verification only with
    /// the cfg from .cargo/config.toml, which a RUSTFLAGS variable silently
    /// replaces: the build would still work, with each Ed25519
    /// verification taking twice the CPU on CPUs with IFMA.
    #[test]
    #[cfg(target_arch = "x86_64")]
    #[expect(
        clippy::assertions_on_constants,
        reason = "the build's configuration is what is checked"
    )]
    fn ed25519_is_built_with_the_avx512_ifma_code() {
        assert!(
            cfg!(curve25519_dalek_backend = "avx512"),
            "built without --cfg curve25519_dalek_backend=\"avx512\" (see .cargo/config.toml)"
        );
    }

    #[test]
    fn signatures_are_checked_over_the_hash_of_the_input() {
        let key = Ed25519Key(signing_key().verifying_key());
        let input = b"from:Alice <alice@example.org>\r\n";
        let mut hasher = Sha256::hasher();
        hasher.write(input);
        let signature = signing_key().sign(hasher.complete().as_ref()).to_bytes();
        key.verify_bytes(input, &signature, Algorithm::Ed25519Sha256)
            .expect("a good signature");
        assert!(
            key.verify_bytes(
                b"from:Mallory <m@example.org>\r\n",
                &signature,
                Algorithm::Ed25519Sha256
            )
            .is_err()
        );
        assert!(matches!(
            key.verify_bytes(input, &signature, Algorithm::RsaSha256),
            Err(Error::Crypto(CryptoError::IncompatibleAlgorithms))
        ));
        assert!(
            key.verify_bytes(input, &signature[..63], Algorithm::Ed25519Sha256)
                .is_err()
        );
    }
}
