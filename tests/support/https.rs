//! A real server on 127.0.0.1 with a generated CA, and a real rustls client for it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use milo_webhook::metrics::Metrics;
use milo_webhook::server::tls::{
    CertPaths, ReloadingCertResolver, generate_dev_chain, server_config,
};
use milo_webhook::server::{ServeOptions, Server, Shutdown};
use milo_webhook::view::ClusterView;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A running webhook server (and admin port) for one test.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub ca_pem: String,
    pub server: Arc<Server>,
    pub resolver: Arc<ReloadingCertResolver>,
    pub dir: tempfile::TempDir,
    webhooks: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server over `view` with default options.
    pub async fn start(view: Arc<ClusterView>) -> Self {
        Self::start_with(view, ServeOptions::default()).await
    }

    /// Starts a server with the given options; certificates are written to a temp dir.
    pub async fn start_with(view: Arc<ClusterView>, options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let chain = generate_dev_chain(&["localhost", "127.0.0.1"]).unwrap();
        let paths = CertPaths {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&paths.cert, &chain.cert_pem).unwrap();
        std::fs::write(&paths.key, &chain.key_pem).unwrap();
        Self::start_with_certs(view, options, paths, chain.ca_cert_pem, dir).await
    }

    /// Starts a server reading its certificate from `paths`.
    pub async fn start_with_certs(
        view: Arc<ClusterView>,
        options: ServeOptions,
        paths: CertPaths,
        ca_pem: String,
        dir: tempfile::TempDir,
    ) -> Self {
        let resolver = ReloadingCertResolver::load(paths).unwrap();
        let tls = server_config(resolver.clone()).unwrap();
        let server = Arc::new(Server {
            view,
            metrics: Arc::new(Metrics::default()),
            options,
            shutdown: Shutdown::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (
            listener.local_addr().unwrap(),
            admin_listener.local_addr().unwrap(),
        );
        let s = server.clone();
        let webhooks = tokio::spawn(async move { s.serve_webhooks(listener, tls).await });
        let s = server.clone();
        let admin = tokio::spawn(async move { s.serve_admin(admin_listener).await });
        Self {
            addr,
            admin_addr,
            ca_pem,
            server,
            resolver,
            dir,
            webhooks,
            admin,
        }
    }

    /// A TLS connection speaking HTTP/1.1.
    pub async fn client(&self) -> Client {
        Client::http1(self.addr, &self.ca_pem).await
    }

    /// Shuts down (no drain delay) and waits for both listeners to stop.
    pub async fn stop(self) {
        self.server.shutdown.begin(std::time::Duration::ZERO).await;
        self.webhooks.await.unwrap();
        self.admin.await.unwrap();
    }

    /// GET on the admin port: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let stream = TcpStream::connect(self.admin_addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Connects over TLS, trusting only `ca_pem`, offering the given ALPN protocols.
pub async fn connect(addr: SocketAddr, ca_pem: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("TLS handshake with the test CA")
}

/// One keep-alive connection.
pub enum Client {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    /// An HTTP/1.1 connection.
    pub async fn http1(addr: SocketAddr, ca_pem: &str) -> Self {
        let tls = connect(addr, ca_pem, &[b"http/1.1"]).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client::Http1(sender)
    }

    /// An HTTP/2 connection (ALPN h2).
    pub async fn http2(addr: SocketAddr, ca_pem: &str) -> Self {
        let tls = connect(addr, ca_pem, &[b"h2"]).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "server negotiates h2"
        );
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client::Http2(sender)
    }

    /// POSTs a body; returns status and body.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let request = Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = match self {
            Client::Http1(sender) => sender.send_request(request).await,
            Client::Http2(sender) => sender.send_request(request).await,
        }
        .expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, body)
    }
}

/// Sends a whole request over a fresh HTTP/2 connection the way curl does: every byte of the body,
/// as fast as flow control allows, then reads the answer. `Err` when the server reset the stream
/// (or the connection) before the body was sent, which curl reports as
/// "(92) Stream error in the HTTP/2 framing layer" instead of the status.
pub async fn h2_exchange(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let tls = connect(server.addr, &server.ca_pem, &[b"h2"]).await;
    let (client, connection) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut client = client.ready().await.map_err(|e| e.to_string())?;
    let request = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client
        .send_request(request, body.is_empty())
        .map_err(|e| e.to_string())?;
    let mut rest = Bytes::from(body);
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted.min(rest.len()),
            Some(Err(error)) => return Err(format!("stream reset while sending: {error}")),
            None => return Err("stream closed while sending".into()),
        };
        if granted == 0 {
            continue;
        }
        let chunk = rest.split_to(granted);
        stream
            .send_data(chunk, rest.is_empty())
            .map_err(|e| format!("stream reset while sending: {e}"))?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(data.len());
        bytes.extend_from_slice(&data);
    }
    Ok((status, bytes))
}
