//! TLS to other relays: TLS 1.2 or 1.3, SNI, and certificates verified
//! against the system's CAs (plus an optional extra CA file), except for
//! test relays (IP literals and domains starting with `_`), whose
//! self-signed certificates are accepted.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// The client configurations for both kinds of peers and both uses.
pub struct TlsConfigs {
    pub verified: Arc<ClientConfig>,
    pub verified_h2: Arc<ClientConfig>,
    pub self_signed: Arc<ClientConfig>,
    pub self_signed_h2: Arc<ClientConfig>,
}

impl TlsConfigs {
    pub fn new(extra_ca: Option<&Path>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("reading {}", path.display()))?)?;
            }
        }
        let verified = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let self_signed = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny { provider }))
            .with_no_client_auth();
        let with_h2 = |config: &ClientConfig| {
            let mut config = config.clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(config)
        };
        Ok(Self {
            verified_h2: with_h2(&verified),
            self_signed_h2: with_h2(&self_signed),
            verified: Arc::new(verified),
            self_signed: Arc::new(self_signed),
        })
    }

    #[must_use]
    pub fn for_peer(&self, self_signed_ok: bool, http: bool) -> Arc<ClientConfig> {
        Arc::clone(match (self_signed_ok, http) {
            (false, false) => &self.verified,
            (false, true) => &self.verified_h2,
            (true, false) => &self.self_signed,
            (true, true) => &self.self_signed_h2,
        })
    }
}

/// The certificate policy of a peer, as a pool key: connections opened
/// with relaxed checks must never serve a peer that needs verification.
#[must_use]
pub fn policy_name(self_signed_ok: bool) -> &'static str {
    if self_signed_ok {
        "relaxed"
    } else {
        "verified"
    }
}

/// The server name for SNI and verification: a DNS name or an IP.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|error| format!("bad server name {host}: {error}"))
}

/// Accepts any certificate but still checks that the server holds its
/// key (the handshake signature), for test relays only.
#[derive(Debug)]
struct AcceptAny {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
