//! The provider events listener's connection bounds in TLS mode, where it faces the internet
//! directly: HTTP/2 connections are pinged and dropped when the peer stops answering, closed when
//! idle, and connections over the cap are closed as they arrive.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use milo_webhook::metrics::Metrics;
use milo_webhook::providers::resend::events::ContactEvent;
use milo_webhook::server::provider_events::{
    EventOutcome, ProviderEventMetrics, ProviderEventSink, ProviderEventsConfig, SinkError, router,
};
use milo_webhook::server::tls::{CertPaths, ReloadingCertResolver, generate_dev_chain};
use milo_webhook::server::{EventsOptions, ServeOptions, Server, Shutdown};
use milo_webhook::view::{ClusterView, Store};
use support::https::connect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Nothing;

impl ProviderEventSink for Nothing {
    fn contact_event(
        &self,
        _: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        Box::pin(async { Ok(EventOutcome::Ignored) })
    }
}

struct Events {
    addr: std::net::SocketAddr,
    ca_pem: String,
    server: Arc<Server>,
    _dir: tempfile::TempDir,
}

async fn start(events: EventsOptions) -> Events {
    let dir = tempfile::tempdir().unwrap();
    let chain = generate_dev_chain(&["localhost", "127.0.0.1"]).unwrap();
    let paths = CertPaths {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::write(&paths.cert, &chain.cert_pem).unwrap();
    std::fs::write(&paths.key, &chain.key_pem).unwrap();
    let tls = milo_webhook::server::tls::server_config(ReloadingCertResolver::load(paths).unwrap())
        .unwrap();
    let server = Arc::new(Server {
        view: Arc::new(ClusterView::offline(Store::default())),
        metrics: Arc::new(Metrics::default()),
        options: ServeOptions {
            events,
            ..ServeOptions::default()
        },
        shutdown: Shutdown::default(),
    });
    let metrics = server.metrics.register(ProviderEventMetrics::register);
    let routes = router(ProviderEventsConfig::default(), Arc::new(Nothing), metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move { s.serve_provider_events(listener, routes, Some(tls)).await });
    Events {
        addr,
        ca_pem: chain.ca_cert_pem,
        server,
        _dir: dir,
    }
}

fn options(keepalive: Duration, timeout: Duration, idle: Duration) -> EventsOptions {
    EventsOptions {
        keepalive,
        keepalive_timeout: timeout,
        idle_timeout: idle,
        ..EventsOptions::default()
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let idle = Duration::from_millis(400);
    let events = start(options(
        Duration::from_secs(30),
        Duration::from_secs(10),
        idle,
    ))
    .await;
    let busy = {
        let tls = connect(events.addr, &events.ca_pem, &[b"h2"]).await;
        let (client, connection) = h2::client::handshake(tls).await.unwrap();
        (client, tokio::spawn(connection))
    };
    let tls = connect(events.addr, &events.ca_pem, &[b"h2"]).await;
    let (_client, connection) = h2::client::handshake(tls).await.unwrap();
    let started = Instant::now();
    let quiet = tokio::spawn(connection);
    // The busy one sends a request every 150 ms for three idle periods.
    let (client, busy_connection) = busy;
    let mut client = client;
    while started.elapsed() < idle * 3 {
        let request = http::Request::post("https://localhost/nowhere")
            .body(())
            .unwrap();
        client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 404);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(quiet.is_finished(), "the idle connection was closed");
    assert!(!busy_connection.is_finished(), "the busy one is open");
    let closed_after = started.elapsed();
    assert!(closed_after >= idle, "{closed_after:?}");
}

/// An HTTP/2 peer that completes the handshake and then never reads or answers anything: the
/// listener's PINGs go unanswered and it drops the connection.
#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_dropped() {
    let keepalive = Duration::from_millis(200);
    let events = start(options(keepalive, keepalive, Duration::from_secs(60))).await;
    let mut tls = connect(events.addr, &events.ca_pem, &[b"h2"]).await;
    // The client preface and an empty SETTINGS frame, then silence.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("still open after 5 s"),
        }
    }
    // Frame types as the server sent them: 9-byte headers, the type at offset 3.
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]);
        types.push(received[at + 3]);
        at += 9 + length as usize;
    }
    assert!(
        types.contains(&0x6),
        "a PING was sent: frame types {types:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "dropped soon");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_as_they_arrive() {
    let events = start(EventsOptions {
        max_connections: 2,
        ..EventsOptions::default()
    })
    .await;
    let _open = [
        connect(events.addr, &events.ca_pem, &[b"h2"]).await,
        connect(events.addr, &events.ca_pem, &[b"h2"]).await,
    ];
    let mut third = tokio::net::TcpStream::connect(events.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once: {read:?}"
    );
    let metrics = events.server.metrics.encode(&events.server.view);
    assert!(
        metrics.contains(r#"milo_webhook_refused_total{listener="events",reason="connections"} 1"#),
        "{metrics}"
    );
}
