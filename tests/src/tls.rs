use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A self-signed certificate for 127.0.0.1 and localhost, as an IP-only
/// relay uses, made with the openssl command line tool.
#[derive(Debug, Clone)]
pub struct SelfSignedCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl SelfSignedCert {
    pub fn generate(dir: &Path) -> Result<Self> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path)
            .stderr(std::process::Stdio::null())
            .status()
            .context("running openssl")?;
        if !status.success() {
            bail!("openssl req failed: {status}");
        }
        Ok(Self {
            cert_path,
            key_path,
        })
    }

    /// A TLS client configuration that trusts exactly this certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        self.client_config_for(rustls::DEFAULT_VERSIONS)
    }

    /// As [`Self::client_config`], offering TLS 1.2 only (a client too
    /// old for the servers that require TLS 1.3).
    pub fn client_config_tls12_only(&self) -> Result<rustls::ClientConfig> {
        self.client_config_for(&[&rustls::version::TLS12])
    }

    fn client_config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<rustls::ClientConfig> {
        let cert = CertificateDer::from_pem_file(&self.cert_path)
            .with_context(|| format!("reading {}", self.cert_path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                cert: cert.into_owned(),
                provider,
            }))
            .with_no_client_auth();
        Ok(config)
    }
}

/// Accepts the one certificate we generated, whatever its issuer, and
/// checks handshake signatures against it as usual.
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "unexpected server certificate".into(),
            ))
        }
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

/// A test CA and a server certificate it issued for 127.0.0.1 and
/// localhost: for servers our daemons verify as they would a public one.
#[derive(Debug, Clone)]
pub struct TestCa {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

fn openssl(args: &[&std::ffi::OsStr]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {:?} failed: {}",
            args.first(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl TestCa {
    pub fn generate(dir: &Path) -> Result<Self> {
        Self::generate_for(dir, &[])
    }

    /// As [`TestCa::generate`], with extra DNS names in the certificate.
    pub fn generate_for(dir: &Path, names: &[&str]) -> Result<Self> {
        let ca_key = dir.join("ca-key.pem");
        let ca_path = dir.join("ca.pem");
        let key_path = dir.join("server-key.pem");
        let csr = dir.join("server.csr");
        let cert_path = dir.join("server.pem");
        let extensions = dir.join("server.ext");
        let mut alt_names = String::from("IP:127.0.0.1,DNS:localhost");
        for name in names {
            alt_names.push_str(",DNS:");
            alt_names.push_str(name);
        }
        std::fs::write(
            &extensions,
            format!(
                "subjectAltName={alt_names}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )?;
        let os = |s: &str| std::ffi::OsString::from(s);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args: Vec<std::ffi::OsString> = vec![os("req"), os("-x509")];
        args.extend(ec.iter().map(|s| os(s)));
        args.extend(["-days", "2", "-subj", "/CN=chatmail test CA"].map(os));
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"].map(os));
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"].map(os));
        args.extend([
            os("-keyout"),
            ca_key.clone().into(),
            os("-out"),
            ca_path.clone().into(),
        ]);
        openssl(&args.iter().map(AsRef::as_ref).collect::<Vec<_>>())?;
        let mut args: Vec<std::ffi::OsString> = vec![os("req")];
        args.extend(ec.iter().map(|s| os(s)));
        args.extend(["-subj", "/CN=localhost"].map(os));
        args.extend([
            os("-keyout"),
            key_path.clone().into(),
            os("-out"),
            csr.clone().into(),
        ]);
        openssl(&args.iter().map(AsRef::as_ref).collect::<Vec<_>>())?;
        let args: Vec<std::ffi::OsString> = vec![
            os("x509"),
            os("-req"),
            os("-days"),
            os("2"),
            os("-in"),
            csr.into(),
            os("-CA"),
            ca_path.clone().into(),
            os("-CAkey"),
            ca_key.into(),
            os("-CAcreateserial"),
            os("-extfile"),
            extensions.into(),
            os("-out"),
            cert_path.clone().into(),
        ];
        openssl(&args.iter().map(AsRef::as_ref).collect::<Vec<_>>())?;
        Ok(Self {
            ca_path,
            cert_path,
            key_path,
        })
    }

    /// A TLS server configuration with the issued certificate, offering
    /// HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let chain =
            CertificateDer::pem_file_iter(&self.cert_path)?.collect::<Result<Vec<_>, _>>()?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}
