//! Replays every fixture in `webhooks/` through the real HTTPS server over TLS.

mod support;

use std::sync::Arc;

use milo_webhook::server::ServeOptions;
use milo_webhook::view::ClusterView;
use support::fixtures;
use support::https::TestServer;

#[tokio::test]
async fn every_fixture_over_https() {
    let corpus = fixtures::all();
    assert!(corpus.len() >= 25, "the corpus has {} cases", corpus.len());
    for fixture in &corpus {
        let options = ServeOptions {
            settings: Arc::new(fixture.settings()),
            ..ServeOptions::default()
        };
        let server =
            TestServer::start_with(Arc::new(ClusterView::offline(fixture.store())), options).await;
        let mut client = server.client().await;
        let (status, body) = client.post(&fixture.path, fixture.body()).await;
        fixture.check_http(status, &body);
        server.stop().await;
    }
}
