//! The HTTPS admission server and its plain-HTTP admin port.
//!
//! Connections are accepted by hand rather than through `axum::serve` so that each socket gets
//! TCP_NODELAY (the API server reuses HTTP/1.1 keep-alive connections, and Nagle's algorithm would
//! hold back the last segment of a response for ~40 ms), TLS comes from a resolver that can swap
//! certificates at runtime, and shutdown can drain in-flight requests.

pub mod admin;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission::Settings;
use crate::metrics::Metrics;
use crate::view::ClusterView;

/// How long a client has to finish the TLS handshake or send request headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a running server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Deadline for one review, body included; below the webhooks' `timeoutSeconds`.
    pub request_timeout: Duration,
    /// How long to keep serving after shutdown begins while readiness reports false.
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the listener closes.
    pub drain_timeout: Duration,
    /// Settings the admission rules read.
    pub settings: Arc<Settings>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(8),
            shutdown_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            settings: Arc::new(Settings {
                invitation_ttl: Some(Settings::DEFAULT_INVITATION_TTL),
                clock: None,
            }),
        }
    }
}

/// A shutdown signal shared by the listeners: flips readiness first, then stops accepting.
#[derive(Clone)]
pub struct Shutdown {
    /// Read by `/readyz`.
    pub shutting_down: Arc<AtomicBool>,
    draining: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            shutting_down: Arc::new(AtomicBool::new(false)),
            draining: watch::channel(false).0,
            stop: watch::channel(false).0,
        }
    }
}

impl Shutdown {
    /// Fails readiness at once, waits `delay` so load balancers notice, then closes listeners.
    pub async fn begin(&self, delay: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.draining.send_replace(true);
        tracing::info!(
            delay_seconds = delay.as_secs_f64(),
            "shutdown requested; draining"
        );
        tokio::time::sleep(delay).await;
        self.stop.send_replace(true);
    }

    /// Resolves as soon as shutdown begins (before the drain), so work that should end first,
    /// such as leading the controllers, can hand over while requests are still served.
    pub async fn draining(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Resolves once the listeners should stop accepting.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// Everything the two listeners share.
pub struct Server {
    /// The view decisions read.
    pub view: Arc<ClusterView>,
    /// Exported metrics.
    pub metrics: Arc<Metrics>,
    /// Timeouts.
    pub options: ServeOptions,
    /// The shutdown signal.
    pub shutdown: Shutdown,
}

impl Server {
    /// The webhook router.
    pub fn webhook_router(&self) -> Router {
        routes::router(routes::WebhookState {
            view: self.view.clone(),
            metrics: self.metrics.clone(),
            request_timeout: self.options.request_timeout,
            settings: self.options.settings.clone(),
        })
    }

    /// The admin router.
    pub fn admin_router(&self) -> Router {
        admin::router(admin::AdminState {
            view: self.view.clone(),
            metrics: self.metrics.clone(),
            shutting_down: self.shutdown.shutting_down.clone(),
        })
    }

    /// Serves webhooks over TLS on `listener` until shutdown, then drains in-flight requests.
    pub async fn serve_webhooks(&self, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
        let router = self.webhook_router();
        serve(
            listener,
            router,
            Some(TlsAcceptor::from(tls)),
            &self.shutdown,
            self.options.drain_timeout,
        )
        .await
    }

    /// Serves the admin endpoints over plain HTTP until shutdown.
    pub async fn serve_admin(&self, listener: TcpListener) {
        serve(
            listener,
            self.admin_router(),
            None,
            &self.shutdown,
            self.options.drain_timeout,
        )
        .await
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: &Shutdown,
    drain_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let stopped = shutdown.stopped();
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            finish(peer, watcher.watch(conn.into_owned())).await
                        }
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    finish(peer, watcher.watch(conn.into_owned())).await
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
}

async fn finish<E: std::fmt::Display>(peer: SocketAddr, conn: impl Future<Output = Result<(), E>>) {
    if let Err(error) = conn.await {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}
