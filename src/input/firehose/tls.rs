//! HTTPS for the endpoint (Firehose only delivers to `https://…:443`, usually through a load
//! balancer that terminates TLS; this serves the case without one). [`server_config`] loads the
//! PEM certificate chain and key into a rustls config (ring provider, HTTP/1.1 only);
//! [`TlsListener`] accepts TCP connections, runs each handshake in its own task under a
//! timeout — so one slow or silent client cannot hold up the others — and hands finished TLS
//! streams to axum's server as an ordinary [`axum::serve::Listener`].

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use prometheus::IntCounter;

/// A client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to pick them up.
const ACCEPTED_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the certificate and key do not make a TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1 or SEC1) into a server
/// config. The provider is passed explicitly, so nothing depends on a process-wide default.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.to_path_buf(),
        message,
    };
    let key_err = |message: String| TlsError::Key {
        path: key.to_path_buf(),
        message,
    };
    let cert_file = std::fs::File::open(cert).map_err(|e| cert_err(e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut BufReader::new(cert_file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in the file".to_string()));
    }
    let key_file = std::fs::File::open(key).map_err(|e| key_err(e.to_string()))?;
    let private_key = rustls_pemfile::private_key(&mut BufReader::new(key_file))
        .map_err(|e| key_err(format!("not a PEM private key: {e}")))?
        .ok_or_else(|| key_err("no PRIVATE KEY block in the file".to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, private_key)?;
    // The server speaks HTTP/1.1 only; saying so keeps an h2-preferring client from trying.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Finished TLS connections, for `axum::serve`.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`; the accept task ends when this listener is dropped
    /// (the server stopped), closing the port.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        handshake_failures: IntCounter,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            tx,
            handshake_failures,
        ));
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept task only ends once this receiver is gone, so this is unreachable in
            // practice; waiting forever is the listener contract's "no more connections".
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    handshake_failures: IntCounter,
) {
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                eprintln!("albwatch: firehose accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let handshake_failures = handshake_failures.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // The server is gone if this fails; the connection just closes.
                    let _ = tx.send((tls, peer)).await;
                }
                // Scanners and health checks fail handshakes all day: counted, not logged.
                Ok(Err(_)) | Err(_) => handshake_failures.inc(),
            }
        });
    }
}
