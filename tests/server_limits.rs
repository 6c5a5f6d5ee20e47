//! The admission listener's bounds over real TLS: an over-limit body gets 413 (declared or sent)
//! and the process keeps answering; a full replica answers 429 with `Retry-After` at once
//! (slots, in-flight bytes) while small reviews keep their lane; connections over the cap are
//! closed as they arrive; HTTP/2 announces its stream cap.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use milo_webhook::server::ServeOptions;
use milo_webhook::server::budget::{ReviewLimits, SLOT_BYTES};
use milo_webhook::view::ClusterView;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use support::fixtures;
use support::https::{Client, TestServer, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const MEMBERSHIP: &str = "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership";

async fn start(options: ServeOptions) -> (TestServer, fixtures::Fixture) {
    let f = fixtures::all()
        .into_iter()
        .find(|f| f.name == "membership-create-allowed")
        .unwrap();
    let view = Arc::new(ClusterView::offline(f.store()));
    (TestServer::start_with(view, options).await, f)
}

/// A request whose head and first `sent` bytes of a `declared`-byte body are on the wire, the
/// rest held back.
async fn stalled(server: &TestServer, declared: usize, sent: usize) -> TlsStream<TcpStream> {
    let mut tls = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    let head = format!(
        "POST {MEMBERSHIP} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {declared}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![b' '; sent]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// Status, headers and body of the one answer on `tls`, read until the server closes or 5 s.
async fn answer(tls: &mut TlsStream<TcpStream>) -> String {
    let mut bytes = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let left = deadline - Instant::now();
        match tokio::time::timeout(left, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
        if String::from_utf8_lossy(&bytes).contains("\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A valid review still gets its verdict.
async fn still_answers(server: &TestServer, f: &fixtures::Fixture) {
    let (status, body) = server.client().await.post(MEMBERSHIP, f.body()).await;
    f.check_http(status, &body);
}

#[tokio::test]
async fn an_over_limit_body_gets_413_and_the_process_keeps_answering() {
    let limits = ReviewLimits {
        max_body: 256 * 1024,
        ..ReviewLimits::default()
    };
    let options = ServeOptions {
        review_limits: limits,
        ..ServeOptions::default()
    };
    let (server, f) = start(options).await;
    // Sent whole with its length: refused, and the keep-alive connection still serves.
    let mut client = server.client().await;
    let (status, body) = client.post(MEMBERSHIP, vec![b'0'; 256 * 1024 + 1]).await;
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("262144-byte limit"));
    let (status, body) = client.post(MEMBERSHIP, f.body()).await;
    f.check_http(status, &body);
    // Over HTTP/2 without a length (so read until it passes the limit).
    let mut h2 = Client::http2(server.addr, &server.ca_pem).await;
    let (status, _) = h2.post(MEMBERSHIP, vec![b'0'; 300 * 1024]).await;
    assert_eq!(status, 413);
    // A length far past the limit is refused from the head alone, before the body is sent.
    let started = Instant::now();
    let mut tls = stalled(&server, 1 << 30, 0).await;
    let text = answer(&mut tls).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    still_answers(&server, &f).await;
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"milo_webhook_refused_total{listener="webhook",reason="body_size"} 3"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_replica_answers_429_at_once_and_recovers() {
    // Three slots for small bodies, one for large ones.
    let limits = ReviewLimits {
        max_concurrent: 4,
        ..ReviewLimits::default()
    };
    let options = ServeOptions {
        review_limits: limits,
        request_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let (server, f) = start(options).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled(&server, 1000, 10).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut small = stalled(&server, f.body().len(), 0).await;
    small.write_all(&f.body()).await.unwrap();
    let text = answer(&mut small).await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(
        text.contains("too many AdmissionReviews in flight"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "not queued");
    // Large bodies have a share of their own: one is read while the small slots are full...
    held.push(stalled(&server, 1 << 20, 10).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...and the next large one is refused.
    let mut large = stalled(&server, 1 << 20, 0).await;
    assert!(answer(&mut large).await.starts_with("HTTP/1.1 429"));
    // The held requests time out (408) and give their slots back.
    for mut tls in held {
        let text = answer(&mut tls).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    still_answers(&server, &f).await;
    server.stop().await;
}

#[tokio::test]
async fn large_bodies_share_a_byte_budget_and_small_reviews_keep_their_lane() {
    let limits = ReviewLimits {
        max_in_flight_bytes: 512 * 1024,
        ..ReviewLimits::default()
    };
    let options = ServeOptions {
        review_limits: limits,
        request_timeout: Duration::from_secs(3),
        ..ServeOptions::default()
    };
    let (server, f) = start(options).await;
    // 264 KiB sent of a 1 MiB body: its buffer (512 KiB) holds 448 KiB of the shared budget.
    let mut hog = stalled(&server, 1 << 20, SLOT_BYTES + 200 * 1024).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 200 KiB would need 136 KiB of it: refused while the hog holds it.
    let large = || async {
        let mut tls = stalled(&server, 200 * 1024, 0).await;
        tls.write_all(&vec![b' '; 200 * 1024]).await.ok();
        answer(&mut tls).await
    };
    let text = large().await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(
        text.contains("too many AdmissionReview bytes in flight"),
        "{text}"
    );
    // A review within its slot's share needs none of the shared budget.
    still_answers(&server, &f).await;
    assert!(answer(&mut hog).await.starts_with("HTTP/1.1 408"));
    // Once the hog is gone the same body is read (and found empty).
    let text = large().await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    server.stop().await;
}

/// A TLS handshake that may fail (the server closes connections over its cap).
async fn try_connect(server: &TestServer) -> Result<TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(server.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    match tokio::time::timeout(Duration::from_secs(2), handshake).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_as_they_arrive() {
    let options = ServeOptions {
        max_connections: 3,
        ..ServeOptions::default()
    };
    let (server, f) = start(options).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(try_connect(&server).await.expect("within the cap"));
    }
    let started = Instant::now();
    let refused = try_connect(&server).await;
    assert!(refused.is_err(), "the fourth is closed");
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    still_answers(&server, &f).await;
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics
            .contains(r#"milo_webhook_refused_total{listener="webhook",reason="connections"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn http2_announces_its_stream_cap() {
    let (server, _) = start(ServeOptions::default()).await;
    let tls = connect(server.addr, &server.ca_pem, &[b"h2"]).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let client = client.ready().await.unwrap();
    // The server's SETTINGS arrive with the handshake.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        client.current_max_send_streams(),
        milo_webhook::server::MAX_H2_STREAMS as usize
    );
    server.stop().await;
}
