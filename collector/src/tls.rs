//! The TLS front: the listeners in front of the broker and the HTTP API. Each accepts,
//! completes the TLS handshake when configured (checking client certificates
//! when a CA is given), and relays to the plain listener on loopback behind
//! it through a `Relay` (for the broker, one that enforces topic grants:
//! `mqtt::acl::GrantRelay`). One implementation for both protocols.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use serde::Deserialize;
use shared::config::Problem;

use crate::conn_limit::ConnLimit;

/// Certificate and key (PEM) for a TLS listener; with `ca_file`, clients
/// must present a certificate signed by that CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The files exist; `name` is the table they came from (`http.tls`, `mqtt.tls`).
    pub fn validate(&self, name: &str, base: &Path, p: &mut Vec<Problem>) {
        for (field, f) in [("cert_file", Some(&self.cert_file)), ("key_file", Some(&self.key_file)), ("ca_file", self.ca_file.as_ref())] {
            if let Some(f) = f.filter(|f| !base.join(f).is_file()) {
                p.push(Problem::new(format!("{name}.{field}"), format!("file `{}` does not exist", base.join(f).display())));
            }
        }
    }
}

/// A handshake slower than this is dropped: a slow or silent peer holds no slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct TlsStats {
    pub accepted: AtomicU64,
    /// Handshakes that failed: no or a wrong certificate, wrong CA, expired, not TLS.
    pub refused: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key in it")]
    NoKey(PathBuf),
    #[error("{path}: {source}")]
    Rustls { path: PathBuf, source: rustls::Error },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot listen for {what} on {listen}: {source}")]
    Listen { what: &'static str, listen: String, source: std::io::Error },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<_, _>>().map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut &pem[..]).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?.ok_or_else(|| TlsError::NoKey(path.to_path_buf()))
}

/// Makes aws-lc-rs the process's TLS provider unless one is set. rustls
/// picks one by itself only when exactly one provider feature is compiled
/// in; a workspace build also has the agent's ring, and a process that
/// builds a TLS client or server without a provider set panics.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The server side of `files`; with `ca_file`, clients must present a certificate it signed.
pub fn server_config(files: &TlsFiles, base: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let builder = ServerConfig::builder();
    let builder = match &files.ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(&base.join(ca))? {
                roots.add(c).map_err(|source| TlsError::Rustls { path: ca.clone(), source })?;
            }
            builder.with_client_cert_verifier(WebPkiClientVerifier::builder(Arc::new(roots)).build()?)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs(&base.join(&files.cert_file))?, key(&base.join(&files.key_file))?)
        .map_err(|source| TlsError::Rustls { path: files.cert_file.clone(), source })?;
    Ok(Arc::new(config))
}

/// The client side for an external broker over TLS: its certificate checked
/// against `ca` (PEM) or, without it, the system's roots; with `client`
/// (certificate, key), this collector's own certificate for a broker that
/// asks. Built once at start, so a file that is not PEM or a key that does
/// not match its certificate stops the start naming the file.
pub fn client_config(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for c in certs(ca)? {
                roots.add(c).map_err(|source| TlsError::Rustls { path: ca.to_path_buf(), source })?;
            }
        }
        None => {
            // Roots that do not load are left out: the handshake then names the broker's certificate.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some((cert, k)) => builder.with_client_auth_cert(certs(cert)?, key(k)?).map_err(|source| TlsError::Rustls { path: cert.to_path_buf(), source })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What a front does with a connection once it is accepted (and its TLS
/// handshake done): relay it to `upstream`, the plain listener behind.
/// `cert_names`: the names (CN and DNS SANs) of the client's certificate,
/// when client certificates are required.
pub trait Relay: Clone + Send + Sync + 'static {
    fn relay<S>(&self, client: S, upstream: TcpStream, peer: SocketAddr, cert_names: Option<Vec<String>>) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;
}

/// The subject's common names and DNS subject-alternative names of a DER certificate.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// Byte for byte, both ways.
#[derive(Clone, Copy)]
pub struct Plain;

impl Relay for Plain {
    async fn relay<S>(&self, mut client: S, mut upstream: TcpStream, _: SocketAddr, _: Option<Vec<String>>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

async fn connect_and_relay<S, R>(client: S, upstream: SocketAddr, relay: R, peer: SocketAddr, cert_names: Option<Vec<String>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Relay,
{
    let Ok(plain) = TcpStream::connect(upstream).await else { return };
    let _ = plain.set_nodelay(true);
    relay.relay(client, plain, peer, cert_names).await;
}

/// Binds `listen` and relays each connection (TLS when `tls`) to `upstream`,
/// within `limit` when given. Returns the bound address.
#[allow(clippy::too_many_arguments)]
pub async fn front<R: Relay>(
    listen: &str,
    tls: Option<Arc<ServerConfig>>,
    upstream: SocketAddr,
    what: &'static str,
    stats: Arc<TlsStats>,
    relay: R,
    limit: Option<Arc<ConnLimit>>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, TlsError> {
    let bound = match TcpListener::bind(listen).await {
        Ok(l) => l.local_addr().map(|a| (l, a)),
        Err(e) => Err(e),
    };
    let (listener, addr) = bound.map_err(|source| TlsError::Listen { what, listen: listen.to_string(), source })?;
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        // Over a cap: closed before any work is done for it.
        while let Some((tcp, peer, slot)) = crate::conn_limit::accept(&listener, limit.as_ref(), what, &mut stop, || {}).await {
            let (acceptor, stats, relay) = (acceptor.clone(), stats.clone(), relay.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tcp.set_nodelay(true);
                let Some(acceptor) = acceptor else {
                    return connect_and_relay(tcp, upstream, relay, peer, None).await;
                };
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        stats.refused.fetch_add(1, Relaxed);
                        tracing::warn!(%peer, "{what} TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        stats.refused.fetch_add(1, Relaxed);
                        tracing::warn!(%peer, "{what} TLS handshake timed out");
                        return;
                    }
                };
                stats.accepted.fetch_add(1, Relaxed);
                // With client certificates required, the relay learns whose certificate it is.
                let names = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| cert_names(c.as_ref()));
                connect_and_relay(tls, upstream, relay, peer, names).await;
            });
        }
    });
    Ok(addr)
}
