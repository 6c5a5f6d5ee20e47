//! The HTTPS server over real TLS: keep-alive, h2, body limit, deadline, readiness, metrics,
//! graceful shutdown, the maximum connection age and certificate rotation the way the kubelet
//! does it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use milo_webhook::server::ServeOptions;
use milo_webhook::server::tls::{CertPaths, ReloadOutcome, generate_dev_chain};
use milo_webhook::view::ClusterView;
use serde_json::Value;
use support::fixtures;
use support::https::{Client, TestServer, connect, h2_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const MEMBERSHIP: &str = "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership";
const MAX_BODY: usize = milo_webhook::server::budget::DEFAULT_MAX_REVIEW_BYTES;

fn fixture(name: &str) -> fixtures::Fixture {
    fixtures::all()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
}

async fn start(name: &str, options: ServeOptions) -> (TestServer, fixtures::Fixture) {
    let f = fixture(name);
    (
        TestServer::start_with(Arc::new(ClusterView::offline(f.store())), options).await,
        f,
    )
}

#[tokio::test]
async fn one_keep_alive_connection_serves_many_reviews() {
    let (server, f) = start(
        "membership-create-blocked-by-removal",
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    for _ in 0..50 {
        let (status, body) = client.post(MEMBERSHIP, f.body()).await;
        f.check_http(status, &body);
    }
    server.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_and_served() {
    let (server, f) = start("membership-create-allowed", ServeOptions::default()).await;
    let mut client = Client::http2(server.addr, &server.ca_pem).await;
    let (status, body) = client.post(MEMBERSHIP, f.body()).await;
    f.check_http(status, &body);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_and_reviews_near_it_are_read() {
    let (server, f) = start("membership-create-allowed", ServeOptions::default()).await;
    let mut client = server.client().await;
    let (status, body) = client.post(MEMBERSHIP, vec![b' '; MAX_BODY + 1]).await;
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("3145728-byte limit"));
    // A large but legal UPDATE-sized review (padded with an annotation) is decided normally.
    let mut review = f.review().unwrap();
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"pad": "x".repeat(MAX_BODY - 64 * 1024)});
    let mut client = server.client().await;
    let (status, body) = client
        .post(MEMBERSHIP, serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["response"]["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_within_the_request_deadline() {
    let options = ServeOptions {
        request_timeout: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    let (server, _) = start("membership-create-allowed", options).await;
    let mut tls = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    let head = format!(
        "POST {MEMBERSHIP} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{{\"apiVersion\""
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut response = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut response))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    server.stop().await;
}

/// A connection that delivers no request head for a head timeout is closed, idle after one to
/// two of them, still sending headers after one to three; one that keeps sending reviews is not.
#[tokio::test]
async fn connections_without_a_request_head_are_closed_after_the_head_timeout() {
    const HEAD_TIMEOUT: Duration = Duration::from_millis(300);
    let options = ServeOptions {
        head_timeout: HEAD_TIMEOUT,
        ..ServeOptions::default()
    };
    let (server, f) = start("membership-create-allowed", options).await;
    let closed_within = |mut tls: TlsStream<TcpStream>, started: std::time::Instant| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest))
            .await
            .expect("closed by the server")
            .ok();
        (started.elapsed(), rest)
    };

    // Headers that never end.
    let started = std::time::Instant::now();
    let mut slow = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    slow.write_all(format!("POST {MEMBERSHIP} HTTP/1.1\r\nhost: localhost\r\n").as_bytes())
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let (after, rest) = closed_within(slow, started).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        after >= HEAD_TIMEOUT && after < 3 * HEAD_TIMEOUT,
        "{after:?}"
    );

    // A keep-alive connection stays open while reviews keep coming, then closes once idle.
    let tls = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..12 {
        let review = http::Request::post(MEMBERSHIP)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(f.body())))
            .unwrap();
        let response = sender.send_request(review).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        f.check_http(200, &body);
        tokio::time::sleep(HEAD_TIMEOUT / 3).await;
    }
    assert!(!conn.is_finished(), "a busy connection stays open");
    let idle = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle connection is closed")
        .unwrap()
        .ok();
    assert!(idle.elapsed() < 3 * HEAD_TIMEOUT, "{:?}", idle.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let (server, f) = start("membership-create-allowed", ServeOptions::default()).await;
    let mut client = server.client().await;
    assert_eq!(
        client.post("/validate-something-else", f.body()).await.0,
        404
    );
    server.stop().await;
}

/// Early answers (the body is not needed) reach the client over both protocols: over HTTP/2 the
/// stream is not reset while the client is still sending, and over HTTP/1.1 the connection stays
/// usable for the next review.
#[tokio::test]
async fn early_answers_are_the_same_over_http1_and_http2() {
    let (server, f) = start("membership-create-allowed", ServeOptions::default()).await;
    let over_limit = vec![b' '; MAX_BODY + 1];
    let cases: [(&str, &str, Vec<u8>, u16, &str); 3] = [
        (
            "POST",
            "/validate-something-else",
            vec![b' '; 1024 * 1024],
            404,
            "no webhook is served at this path",
        ),
        ("POST", MEMBERSHIP, over_limit, 413, "3145728-byte limit"),
        (
            "PUT",
            MEMBERSHIP,
            f.body(),
            405,
            "webhooks accept POST only",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let (got, answer) = h2_exchange(&server, method, path, body.clone())
            .await
            .unwrap_or_else(|e| panic!("HTTP/2 {method} {path}: {e}"));
        assert_eq!(got, status, "HTTP/2 {method} {path}");
        assert!(
            String::from_utf8_lossy(&answer).contains(message),
            "HTTP/2 {method} {path}"
        );

        if method == "POST" {
            let mut client = server.client().await;
            let (got, answer) = client.post(path, body).await;
            assert_eq!(got, status, "HTTP/1.1 {path}");
            assert!(
                String::from_utf8_lossy(&answer).contains(message),
                "HTTP/1.1 {path}"
            );
            let (got, answer) = client.post(MEMBERSHIP, f.body()).await;
            f.check_http(got, &answer);
        }
    }
    // Past the drain bound the client is cut off after the answer rather than read forever.
    let endless = vec![b' '; 3 * MAX_BODY];
    assert!(
        h2_exchange(&server, "POST", MEMBERSHIP, endless)
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn readiness_follows_sync_and_unsynced_views_deny_rather_than_allow() {
    let server = TestServer::start(Arc::new(ClusterView::unsynced())).await;
    assert_eq!(server.admin_get("/livez").await, (200, "ok\n".into()));
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("ContactGroupMembership"), "{body}");
    let f = fixture("membership-create-allowed");
    let (status, body) = server.client().await.post(MEMBERSHIP, f.body()).await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        reply["response"]["allowed"], false,
        "an unsynced view never allows"
    );
    assert_eq!(reply["response"]["status"]["code"], 503);
    for kind in milo_webhook::view::ViewKind::ALL {
        server.server.view.mark_synced(kind);
    }
    assert_eq!(server.admin_get("/readyz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_reviews_by_webhook_operation_and_verdict() {
    let (server, f) = start(
        "membership-create-blocked-by-removal",
        ServeOptions::default(),
    )
    .await;
    let mut client = server.client().await;
    for _ in 0..3 {
        client.post(MEMBERSHIP, f.body()).await;
    }
    client.post(MEMBERSHIP, b"nonsense".to_vec()).await;
    let (status, text) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let line = format!(
        "milo_webhook_admission_reviews_total{{webhook=\"{MEMBERSHIP}\",operation=\"CREATE\",verdict=\"denied\"}} 3"
    );
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains(&format!(
            "webhook=\"{MEMBERSHIP}\",operation=\"unknown\",verdict=\"error\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("milo_webhook_admission_review_duration_seconds_bucket{le=\"0.0001\""),
        "{text}"
    );
    assert!(
        text.contains("milo_webhook_view_objects{kind=\"ContactGroupMembershipRemoval\"} 1"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_fails_readiness_first_then_drains_in_flight_requests() {
    let (server, f) = start("membership-create-allowed", ServeOptions::default()).await;
    // A request in flight: headers and half the body sent.
    let body = f.body();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut tls = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    let head = format!(
        "POST {MEMBERSHIP} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let shutdown = server.server.shutdown.clone();
    let begin = tokio::spawn(async move { shutdown.begin(Duration::from_millis(500)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.admin_get("/readyz").await.0,
        503,
        "readiness fails at once"
    );
    let (status, _) = server.client().await.post(MEMBERSHIP, f.body()).await;
    assert_eq!(
        status, 200,
        "new requests are still served during the drain delay"
    );
    begin.await.unwrap();

    tls.write_all(rest).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response))
        .await
        .expect("finished")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the in-flight request completes: {text}"
    );
    assert!(text.contains("\"allowed\":true"));
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(
        refused.is_err(),
        "the listener is closed after the drain delay"
    );
}

/// The kubelet's Secret volume layout: timestamped directory, `..data` symlink, file symlinks.
fn write_secret_generation(dir: &std::path::Path, generation: &str, cert: &str, key: &str) {
    let data = dir.join(generation);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

async fn served_leaf(server: &TestServer, ca_pem: &str) -> Vec<u8> {
    let tls = connect(server.addr, ca_pem, &[b"http/1.1"]).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_kubelet_style_secret_rotation_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate_dev_chain(&["localhost"]).unwrap();
    write_secret_generation(
        dir.path(),
        "..2026_11_21_00_00_00.1",
        &first.cert_pem,
        &first.key_pem,
    );
    std::os::unix::fs::symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", dir.path().join("tls.key")).unwrap();
    let paths = CertPaths {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let root = dir.path().to_owned();
    let server = TestServer::start_with_certs(
        Arc::new(ClusterView::offline(Default::default())),
        ServeOptions::default(),
        paths,
        first.ca_cert_pem.clone(),
        dir,
    )
    .await;
    let before = served_leaf(&server, &first.ca_cert_pem).await;

    let second = generate_dev_chain(&["localhost"]).unwrap();
    write_secret_generation(
        &root,
        "..2026_11_21_01_00_00.2",
        &second.cert_pem,
        &second.key_pem,
    );
    std::fs::remove_dir_all(root.join("..2026_11_21_00_00_00.1")).unwrap();
    assert_eq!(server.resolver.reload_if_changed(), ReloadOutcome::Reloaded);
    let after = served_leaf(&server, &second.ca_cert_pem).await;
    assert_ne!(before, after);
    assert_eq!(after, server.resolver.current_leaf_der());

    // A broken rotation keeps the last good certificate.
    write_secret_generation(
        &root,
        "..2026_11_21_02_00_00.3",
        "not a certificate",
        &second.key_pem,
    );
    assert!(matches!(
        server.resolver.reload_if_changed(),
        ReloadOutcome::Failed(_)
    ));
    assert_eq!(served_leaf(&server, &second.ca_cert_pem).await, after);
    server.stop().await;
}

/// Options with a tiny maximum connection age (each connection draws at most 1.1 times it).
fn short_lived() -> ServeOptions {
    ServeOptions {
        max_connection_age: Some(Duration::from_millis(300)),
        ..ServeOptions::default()
    }
}

/// Comfortably past the longest drawn age.
const PAST_AGE: Duration = Duration::from_millis(700);
/// Bound on every wait for the server to act.
const BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http1_connections_are_closed_after_their_maximum_age() {
    let (server, f) = start("membership-create-allowed", short_lived()).await;

    // An idle keep-alive connection is never closed under the client (a request sent at that
    // instant would fail): once it is old, its next request is answered with
    // `Connection: close`, and then the connection ends.
    let tls = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let review = || {
        http::Request::post(MEMBERSHIP)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(f.body())))
            .unwrap()
    };
    let response = sender.send_request(review()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    f.check_http(200, &body);
    tokio::time::sleep(PAST_AGE).await;
    assert!(!conn.is_finished(), "an idle old connection stays open");
    let response = sender.send_request(review()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    f.check_http(200, &body);
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("the connection ends after that answer")
        .unwrap()
        .ok();
    assert!(sender.send_request(review()).await.is_err());

    // A request in flight when the age is reached is answered, with `Connection: close`, and
    // the connection then ends.
    let body = f.body();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut tls = connect(server.addr, &server.ca_pem, &[b"http/1.1"]).await;
    let head = format!(
        "POST {MEMBERSHIP} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(PAST_AGE).await;
    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(BOUND, tls.read_to_end(&mut response))
        .await
        .expect("answered, then closed")
        .unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("\"allowed\":true"), "{text}");

    // A new connection is served as usual.
    let (status, body) = server.client().await.post(MEMBERSHIP, f.body()).await;
    f.check_http(status, &body);
    server.stop().await;
}

#[tokio::test]
async fn http2_connections_get_goaway_after_their_maximum_age_and_streams_in_flight_finish() {
    let (server, f) = start("membership-create-allowed", short_lived()).await;
    let tls = connect(server.addr, &server.ca_pem, &[b"h2"]).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = || {
        http::Request::post(format!("https://localhost{MEMBERSHIP}"))
            .header("content-type", "application/json")
            .body(())
            .unwrap()
    };
    // A stream in flight across the age: half its body before, the rest after.
    let body = Bytes::from(f.body());
    let half = body.len() / 2;
    let (response, mut stream) = client.send_request(request(), false).unwrap();
    stream.send_data(body.slice(..half), false).unwrap();
    tokio::time::sleep(PAST_AGE).await;
    stream.send_data(body.slice(half..), true).unwrap();
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("the stream in flight is answered")
        .unwrap();
    let status = response.status().as_u16();
    let mut answer = response.into_body();
    let mut bytes = Vec::new();
    while let Some(data) = answer.data().await {
        bytes.extend_from_slice(&data.unwrap());
    }
    f.check_http(status, &bytes);

    // The GOAWAY came before that answer: the connection takes no new stream.
    let refused = client
        .clone()
        .ready()
        .await
        .err()
        .or_else(|| client.send_request(request(), true).err());
    let refused = refused.expect("no new stream on a connection past its age");
    assert!(refused.is_go_away(), "{refused}");
    assert_eq!(refused.reason(), Some(h2::Reason::NO_ERROR), "{refused}");
    drop(client);
    tokio::time::timeout(BOUND, connection)
        .await
        .expect("the server closes the connection")
        .unwrap()
        .ok();

    // A new connection is served as usual.
    let (status, body) = h2_exchange(&server, "POST", MEMBERSHIP, f.body())
        .await
        .unwrap();
    f.check_http(status, &body);
    server.stop().await;
}

#[tokio::test]
async fn connections_live_on_without_a_maximum_age() {
    let options = ServeOptions {
        max_connection_age: None,
        ..ServeOptions::default()
    };
    let (server, f) = start("membership-create-allowed", options).await;
    let mut client = server.client().await;
    let (status, body) = client.post(MEMBERSHIP, f.body()).await;
    f.check_http(status, &body);
    tokio::time::sleep(PAST_AGE).await;
    let (status, body) = client.post(MEMBERSHIP, f.body()).await;
    f.check_http(status, &body);
    server.stop().await;
}

/// A client that stops reading keeps its stream busy forever; past its age plus the grace period
/// (the request deadline) the connection is dropped anyway.
#[tokio::test]
async fn a_connection_still_busy_after_the_grace_period_is_dropped() {
    let options = ServeOptions {
        request_timeout: Duration::from_millis(300),
        ..short_lived()
    };
    let (server, f) = start("membership-create-allowed", options).await;
    let tls = connect(server.addr, &server.ca_pem, &[b"h2"]).await;
    // A zero receive window: the server can send the answer's headers but none of its body.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("https://localhost{MEMBERSHIP}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream.send_data(Bytes::from(f.body()), true).unwrap();
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("headers are sent")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut answer = response.into_body();
    let data = tokio::time::timeout(BOUND, answer.data())
        .await
        .expect("the server drops the connection");
    assert!(
        !matches!(data, Some(Ok(_))),
        "no body can arrive through a zero window"
    );
    tokio::time::timeout(BOUND, connection)
        .await
        .expect("the connection ends")
        .unwrap()
        .ok();
    server.stop().await;
}
