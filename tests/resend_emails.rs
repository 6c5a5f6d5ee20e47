//! Sending through the Resend client against the fake's idempotency rules: a repeated key sends
//! once, a lost answer is safe to repeat, a concurrent repeat waits, a changed payload under one
//! key is permanent, batches are strict and keyed, and the operations are counted.

mod support;

use std::time::Duration;

use axum::http::Method;
use milo_webhook::providers::metrics::ProviderMetrics;
use milo_webhook::providers::resend::{OutgoingEmail, ResendClient, ResendConfig, ResendError};
use support::fake_resend::{self, FakeConfig, FakeResend, Fault};

async fn setup() -> (FakeResend, ResendClient, ProviderMetrics) {
    let fake = fake_resend::start(FakeConfig::default()).await;
    let metrics = ProviderMetrics::unregistered();
    let mut config = ResendConfig::new("re_test_key");
    config.base_url = fake.base_url.clone();
    config.rate_limit = 100.0;
    let client = ResendClient::new(config, metrics.clone()).unwrap();
    (fake, client, metrics)
}

fn email(to: &str, subject: &str) -> OutgoingEmail {
    OutgoingEmail {
        from: "Milo <noreply@example.com>".into(),
        to: vec![to.into()],
        subject: subject.into(),
        text: Some("hello".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_repeated_key_sends_once_and_answers_the_first_id() {
    let (fake, client, metrics) = setup().await;
    let first = client
        .send_email(&email("a@example.com", "Hi"), "uid-1")
        .await
        .unwrap();
    let again = client
        .send_email(&email("a@example.com", "Hi"), "uid-1")
        .await
        .unwrap();
    assert_eq!(first, again);
    let sent = fake.sent_emails();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].idempotency_key.as_deref(), Some("uid-1"));
    assert!(
        sent[0].payload.get("headers").is_none(),
        "no mail header carries the key"
    );
    for r in fake.requests() {
        assert_eq!(r.idempotency_key.as_deref(), Some("uid-1"));
    }
    assert_eq!(metrics.request_count("resend", "send_email", "200"), 2);
}

#[tokio::test]
async fn a_lost_answer_is_repeated_safely() {
    let (fake, client, _) = setup().await;
    fake.fail_next_matching(1, Method::POST, "/emails", Fault::DropAnswer);
    let lost = client
        .send_email(&email("a@example.com", "Hi"), "uid-1")
        .await;
    assert!(
        matches!(lost, Err(ResendError::Transient { .. })),
        "{lost:?}"
    );
    let id = client
        .send_email(&email("a@example.com", "Hi"), "uid-1")
        .await
        .unwrap();
    let sent = fake.sent_emails();
    assert_eq!(sent.len(), 1, "the repeat sent nothing");
    assert_eq!(sent[0].id, id);
}

#[tokio::test]
async fn a_concurrent_repeat_waits_for_the_first() {
    let (fake, client, metrics) = setup().await;
    fake.fail_next_matching(
        1,
        Method::POST,
        "/emails",
        Fault::Delay(Duration::from_millis(400)),
    );
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.send_email(&email("a@example.com", "Hi"), "k").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = client
        .send_email(&email("a@example.com", "Hi"), "k")
        .await
        .unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first, second);
    assert_eq!(fake.sent_emails().len(), 1);
    assert!(metrics.request_count("resend", "send_email", "409") >= 1);
}

#[tokio::test]
async fn another_payload_under_one_key_is_permanent() {
    let (fake, client, _) = setup().await;
    client
        .send_email(&email("a@example.com", "Hi"), "uid-1")
        .await
        .unwrap();
    let error = client
        .send_email(&email("a@example.com", "Changed"), "uid-1")
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(error.to_string().contains("invalid_idempotent_request"));
    assert_eq!(fake.sent_emails().len(), 1);
}

#[tokio::test]
async fn a_validation_error_is_permanent() {
    let (fake, client, _) = setup().await;
    fake.refuse_emails(
        "example.com",
        403,
        "validation_error",
        "The example.com domain is not verified.",
    );
    let error = client
        .send_email(&email("a@example.com", "Hi"), "uid-1")
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(error.to_string().contains("not verified"));
    assert!(fake.sent_emails().is_empty());
}

#[tokio::test]
async fn batches_are_strict_keyed_and_bounded() {
    let (fake, client, metrics) = setup().await;
    let emails: Vec<OutgoingEmail> = (0..3)
        .map(|i| email(&format!("p{i}@example.com"), "News"))
        .collect();
    let ids = client.send_batch(&emails, "bc-1-0").await.unwrap();
    assert_eq!(ids.len(), 3);
    let again = client.send_batch(&emails, "bc-1-0").await.unwrap();
    assert_eq!(ids, again);
    assert_eq!(fake.sent_emails().len(), 3);
    assert!(fake.sent_emails().iter().all(|e| e.batch));
    assert_eq!(metrics.request_count("resend", "send_batch", "200"), 2);
    let too_many: Vec<OutgoingEmail> = (0..101).map(|_| email("x@example.com", "s")).collect();
    assert!(client.send_batch(&too_many, "bc-2").await.is_err());
    assert_eq!(fake.count(Method::POST, "/emails/batch"), 2, "never sent");
}
