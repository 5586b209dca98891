//! A domain relay's certificate from an ACME CA, offline: Debian's pebble
//! as the CA (resolving the relay through the tests' DNS server), Debian's
//! certbot as chatmail-configure drives it, HTTP-01 answered by the
//! relay's own rendered nginx site, which then serves the new certificate
//! for the domain and for mta-sts.<domain>. The same site passes /mxdeliv
//! on to filtermail-incoming over kept-alive connections.

use std::convert::Infallible;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use chatmail_config::Config;
use chatmail_configure::acme::{AcmeLayout, AcmeRequest, obtain};
use chatmail_configure::{
    BehindHttps, Context, Layout, PrivateInstance, Vmail, WebLayout, render_all, write_files,
};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use relay_tests::{Daemon, DnsServer, Ready, SelfSignedCert, TestCa, VmailUser, free_port};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const DOMAIN: &str = "alpha.test";

/// GET `path` over HTTPS from 127.0.0.1:`port` as `name`, trusting only
/// the certificates in `roots` (PEM); the response as text.
async fn https_get(port: u16, name: &str, roots: &[u8], path: &str) -> Result<String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots) {
        store.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned())?, tcp)
        .await
        .with_context(|| format!("TLS to {name} on port {port}"))?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    tls.flush().await?;
    let mut response = Vec::new();
    // nginx closes after the answer; rustls may see no close_notify.
    let _ = tls.read_to_end(&mut response).await;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// As [`https_get`], retried for a while: after `nginx -s reload`, old
/// workers still take some new connections with the old certificate
/// until they exit, so one success does not mean the next one too.
async fn https_get_after_reload(port: u16, name: &str, roots: &[u8], path: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match https_get(port, name, roots, path).await {
            Ok(page) => return Ok(page),
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {error:#}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The relay's configuration rendered into a directory, its web site
/// served by a private nginx on loopback.
struct Site {
    config: Config,
    layout: Layout,
    /// The self-signed certificate nginx starts with.
    cert: SelfSignedCert,
    nginx_conf: std::path::PathBuf,
    http: u16,
    https: u16,
    _nginx: Daemon,
}

/// Renders the relay's configuration for `ini` (chatmail.ini lines) into
/// `dir` and starts nginx on the site.
fn start_site(dir: &Path, ini: &str) -> Result<Site> {
    let (http, https) = (free_port()?, free_port()?);
    let config = Config::from_ini_str(
        &format!("[params]\nmail_domain = {DOMAIN}\n{ini}"),
        Path::new("chatmail.ini"),
    )?;
    let vmail = VmailUser::lookup()?;
    let cert = SelfSignedCert::generate(dir)?;
    let mut layout = Layout::system(Vmail {
        uid: vmail.uid,
        gid: vmail.gid,
    });
    layout.postfix_dir = dir.join("postfix");
    layout.dovecot_dir = dir.join("dovecot");
    layout.web = WebLayout::in_dir(dir, dir.join("fcgiwrap.socket"));
    layout.opendkim = None;
    layout.acme = AcmeLayout::in_dir(&dir.join("acme"));
    layout.listen = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    (layout.ports.http, layout.ports.https) = (http, https);
    // What nginx passes port `https` on to (the site here; Dovecot and
    // Postfix are not running).
    layout.ports.behind_https = BehindHttps {
        web: free_port()?,
        imaps: free_port()?,
        smtps: free_port()?,
    };
    (layout.tls_cert, layout.tls_key) = (cert.cert_path.clone(), cert.key_path.clone());
    let private = PrivateInstance {
        root: dir.join("private"),
        instance_name: "site-test".into(),
    };
    for sub in [private.nginx_dir(), private.log_dir()] {
        fs::create_dir_all(&sub)?;
    }
    layout.private = Some(private.clone());
    write_files(&render_all(&Context::new(&config, &layout), &layout)?)?;
    let nginx_conf = private.nginx_dir().join("nginx.conf");
    let mut nginx = Command::new("nginx");
    nginx
        .arg("-c")
        .arg(&nginx_conf)
        .arg("-e")
        .arg(private.log_dir().join("nginx-error.log"));
    let nginx = Daemon::spawn("nginx", nginx, Ready::Port(http), &private.log_dir())?;
    Ok(Site {
        config,
        layout,
        cert,
        nginx_conf,
        http,
        https,
        _nginx: nginx,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_pebble_is_served_by_the_relay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let dns = DnsServer::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    for name in [
        "alpha.test.",
        "mta-sts.alpha.test.",
        "autoconfig.alpha.test.",
    ] {
        dns.add_ip(name, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    // The relay's web front door with a self-signed certificate at first.
    let Site {
        config,
        mut layout,
        nginx_conf,
        http,
        https,
        // Bound, so that nginx runs until the end of the test.
        _nginx,
        cert: _,
    } = start_site(dir.path(), "acme_email = admin@alpha.test\n")?;

    // pebble: its API over TLS with a test CA's certificate, HTTP-01
    // validation on the relay's HTTP port, names resolved by our DNS.
    let pebble_tls = dir.path().join("pebble-tls");
    fs::create_dir_all(&pebble_tls)?;
    let pebble_ca = TestCa::generate(&pebble_tls)?;
    let (api, management) = (free_port()?, free_port()?);
    let pebble_config = dir.path().join("pebble.json");
    fs::write(
        &pebble_config,
        serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{api}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": pebble_ca.cert_path,
                "privateKey": pebble_ca.key_path,
                "httpPort": http,
                "tlsPort": free_port()?,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        })
        .to_string(),
    )?;
    let mut pebble = Command::new("pebble");
    pebble
        .arg("-config")
        .arg(&pebble_config)
        .arg("-dnsserver")
        .arg(dns.addr().to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0");
    let _pebble = Daemon::spawn(
        "pebble",
        pebble,
        Ready::Ports(&[api, management]),
        dir.path(),
    )?;

    // As `chatmail-configure --acme` does: certbot through the site's web
    // root, then the configuration again with the new certificate.
    let (chain, key) = obtain(
        &layout.acme,
        &AcmeRequest {
            domain: DOMAIN,
            email: config.acme_email.as_deref(),
            server: &format!("https://127.0.0.1:{api}/dir"),
            webroot: &layout.web.www_dir,
            deploy_hook: "true",
            ca_bundle: Some(&pebble_ca.ca_path),
        },
    )?;
    assert_eq!(
        layout.acme.certificate(DOMAIN),
        Some((chain.clone(), key.clone()))
    );
    (layout.tls_cert, layout.tls_key) = (chain, key);
    let written = write_files(&render_all(&Context::new(&config, &layout), &layout)?)?;
    assert!(written.contains(&layout.web.site), "{written:?}");
    let reload = Command::new("nginx")
        .arg("-c")
        .arg(&nginx_conf)
        .args(["-s", "reload"])
        .status()?;
    assert!(reload.success());

    // The relay now proves both names with a chain to pebble's root.
    let root = https_get(
        management,
        "localhost",
        &fs::read(&pebble_ca.ca_path)?,
        "/roots/0",
    )
    .await?;
    let root_pem = root
        .find("-----BEGIN CERTIFICATE-----")
        .and_then(|start| root.get(start..))
        .context("pebble's root")?
        .to_owned();
    let page = https_get_after_reload(https, DOMAIN, root_pem.as_bytes(), "/").await?;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let policy = https_get_after_reload(
        https,
        "mta-sts.alpha.test",
        root_pem.as_bytes(),
        "/.well-known/mta-sts.txt",
    )
    .await?;
    assert!(
        policy.contains("mode: enforce\nmx: alpha.test\n"),
        "{policy}"
    );
    // Mail clients' autoconfig, under its own name too.
    let autoconfig = https_get_after_reload(
        https,
        "autoconfig.alpha.test",
        root_pem.as_bytes(),
        "/mail/config-v1.1.xml",
    )
    .await?;
    assert!(autoconfig.starts_with("HTTP/1.1 200"), "{autoconfig}");
    assert!(autoconfig.contains("<port>993</port>"), "{autoconfig}");
    Ok(())
}

/// A stand-in for filtermail-incoming's HTTP door: answers every request
/// with a 250 and counts the connections it accepts.
async fn counting_upstream() -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(|request: Request<Incoming>| async move {
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"250 2.0.0 Delivered",
                ))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok((port, accepted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mxdeliv_reaches_the_filter_over_kept_alive_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let (upstream, connections) = counting_upstream().await?;
    let site = start_site(
        dir.path(),
        &format!("filtermail_http_port_incoming = {upstream}\n"),
    )?;

    // One HTTP/2 connection, as filtermail-transport keeps per relay.
    let mut tls = site.cert.client_config()?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", site.https)).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    for n in 0..5 {
        let request = Request::post(format!("https://{DOMAIN}/mxdeliv"))
            .header("X-Mail-From", "alice@example.org")
            .header("X-Mail-To", format!("bob@{DOMAIN}"))
            .body(Full::new(Bytes::from(format!(
                "Subject: {n}\r\n\r\nhi\r\n"
            ))))?;
        let response = sender.send_request(request).await?;
        assert_eq!(response.status(), 200, "delivery {n}");
        let body = response.into_body().collect().await?.to_bytes();
        assert_eq!(&body[..], b"250 2.0.0 Delivered", "delivery {n}");
    }
    // nginx asked for a new connection per delivery before.
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    Ok(())
}
