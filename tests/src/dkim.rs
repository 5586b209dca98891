//! DKIM signing keys for tests, with the TXT record to publish for them.

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

/// Key material; mail-auth's signer takes its key by value, so a key is
/// made from it for each signature.
enum PrivateKey {
    RsaPem(Vec<u8>),
    Ed25519Pkcs8(Vec<u8>),
}

/// A signing key of `domain` published under `selector`.
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    key: PrivateKey,
    /// The `p=` value: base64 of the public key.
    public_key: String,
    key_type: &'static str,
}

const SIGNED_HEADERS: [&str; 5] = ["From", "To", "Subject", "Date", "Message-ID"];

impl DkimKey {
    /// A 2048-bit RSA key made by openssl, whose public key is published
    /// as a SubjectPublicKeyInfo, as real relays do.
    pub fn rsa(domain: &str, selector: &str) -> anyhow::Result<Self> {
        let pem = run(Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]))?;
        let mut public = Command::new("openssl");
        public.args(["pkey", "-pubout", "-outform", "DER"]);
        let public_der = run_with_input(&mut public, &pem)?;
        Ok(Self {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key: PrivateKey::RsaPem(pem),
            public_key: STANDARD.encode(public_der),
            key_type: "rsa",
        })
    }

    pub fn ed25519(domain: &str, selector: &str) -> anyhow::Result<Self> {
        let pkcs8 = Ed25519Key::generate_pkcs8()
            .map_err(|error| anyhow::anyhow!("Ed25519 key: {error}"))?;
        let key = Ed25519Key::from_pkcs8_der(&pkcs8)
            .map_err(|error| anyhow::anyhow!("Ed25519 key: {error}"))?;
        Ok(Self {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            public_key: STANDARD.encode(key.public_key()),
            key: PrivateKey::Ed25519Pkcs8(pkcs8),
            key_type: "ed25519",
        })
    }

    /// The DNS name of the key record.
    #[must_use]
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}.", self.selector, self.domain)
    }

    /// The TXT record text in its usual form.
    #[must_use]
    pub fn record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.key_type, self.public_key)
    }

    /// The public key, for records written in unusual forms.
    #[must_use]
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// `message` with a DKIM-Signature header prepended.
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.sign_expiring(message, 0)
    }

    /// Signs with an x= tag `seconds` after now (0: no expiry).
    pub fn sign_expiring(&self, message: &[u8], seconds: u64) -> anyhow::Result<Vec<u8>> {
        self.sign_with(message, &SIGNED_HEADERS, seconds)
    }

    /// Signs only the `headers` named (as a signer that leaves From out).
    pub fn sign_headers(&self, message: &[u8], headers: &[&str]) -> anyhow::Result<Vec<u8>> {
        self.sign_with(message, headers, 0)
    }

    fn sign_with(&self, message: &[u8], headers: &[&str], seconds: u64) -> anyhow::Result<Vec<u8>> {
        let key_error = |error| anyhow::anyhow!("key: {error}");
        let header = match &self.key {
            PrivateKey::RsaPem(pem) => DkimSigner::from_key(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::from_pem_slice(pem)?)
                    .map_err(key_error)?,
            )
            .domain(&self.domain)
            .selector(&self.selector)
            .headers(headers.iter().copied())
            .expiration(seconds)
            .sign(message),
            PrivateKey::Ed25519Pkcs8(pkcs8) => {
                DkimSigner::from_key(Ed25519Key::from_pkcs8_der(pkcs8).map_err(key_error)?)
                    .domain(&self.domain)
                    .selector(&self.selector)
                    .headers(headers.iter().copied())
                    .expiration(seconds)
                    .sign(message)
            }
        }
        .map_err(|error| anyhow::anyhow!("signing: {error}"))?
        .to_header();
        let mut signed = header.into_bytes();
        signed.extend_from_slice(message);
        Ok(signed)
    }
}

fn run(command: &mut Command) -> anyhow::Result<Vec<u8>> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

fn run_with_input(command: &mut Command, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(input)?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}
