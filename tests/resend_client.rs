//! The Resend client against the stateful fake: auth headers, contact and segment calls, paging,
//! the account rate limit (its own pace, Resend's headers, 429 pauses), error classification and
//! the crash-replay case of a lost create answer.

mod support;

use std::time::{Duration, Instant};

use axum::http::Method;
use milo_webhook::providers::metrics::ProviderMetrics;
use milo_webhook::providers::resend::types::{ContactPatch, NewContact};
use milo_webhook::providers::resend::{ResendClient, ResendConfig, ResendError};
use prometheus_client::registry::Registry;
use support::fake_resend::{self, ExistingEmail, FakeConfig, FakeResend, Fault};

const UA: &str = "milo-webhook-test/1";

fn config(fake: &FakeResend, key: &str, rate: f64) -> ResendConfig {
    ResendConfig {
        base_url: format!("{}/", fake.base_url),
        api_key: key.into(),
        rate_limit: rate,
        user_agent: UA.into(),
        timeout: Duration::from_secs(5),
    }
}

async fn setup(fake_config: FakeConfig, rate: f64) -> (FakeResend, ResendClient, ProviderMetrics) {
    let fake = fake_resend::start(fake_config).await;
    let metrics = ProviderMetrics::unregistered();
    let client = ResendClient::new(config(&fake, "re_test_key", rate), metrics.clone()).unwrap();
    (fake, client, metrics)
}

fn new_contact(email: &str) -> NewContact {
    NewContact {
        email: email.into(),
        first_name: Some("Ada".into()),
        last_name: None,
        unsubscribed: false,
        segments: Vec::new(),
    }
}

#[tokio::test]
async fn every_request_carries_user_agent_and_key_and_a_wrong_key_is_invalid() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    client
        .create_contact(&new_contact("a@example.com"))
        .await
        .unwrap();
    client.get_contact("a@example.com").await.unwrap().unwrap();
    client.list_segments().await.unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.user_agent.as_deref(), Some(UA), "{r:?}");
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer re_test_key"),
            "{r:?}"
        );
    }
    assert_eq!(client.calls(), 3);

    let wrong = ResendClient::new(
        config(&fake, "re_wrong", 100.0),
        ProviderMetrics::unregistered(),
    )
    .unwrap();
    let err = wrong.get_contact("a@example.com").await.unwrap_err();
    assert!(
        matches!(err, ResendError::Invalid { status: 403, .. }),
        "{err:?}"
    );
    assert!(err.is_permanent());
    assert_eq!(err.reason(), "Invalid");
    assert_eq!(err.retry_in(), None);
}

#[tokio::test]
async fn contact_lifecycle_never_writes_unsubscribed() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let email = "ada+news@example.com";
    let id = client.create_contact(&new_contact(email)).await.unwrap();
    let got = client.get_contact(email).await.unwrap().unwrap();
    assert_eq!(
        (got.id.as_str(), got.first_name.as_deref()),
        (id.as_str(), Some("Ada"))
    );
    assert_eq!(client.get_contact(&id).await.unwrap().unwrap().email, email);

    // The person opts out in Resend; our updates must keep that.
    fake.set_unsubscribed(email, true);
    let patch = ContactPatch {
        first_name: Some("Augusta".into()),
        last_name: Some("King".into()),
        ..ContactPatch::default()
    };
    client.update_contact(email, &patch).await.unwrap();
    let stored = fake.contact(email).unwrap();
    assert!(stored.unsubscribed);
    assert_eq!(stored.first_name.as_deref(), Some("Augusta"));
    assert!(client.get_contact(&id).await.unwrap().unwrap().unsubscribed);
    // A new address is changed in place: same id, opt-out kept.
    let moved = ContactPatch {
        email: Some("ada@example.org".into()),
        ..ContactPatch::default()
    };
    client.update_contact(&id, &moved).await.unwrap();
    let stored = fake.contact("ada@example.org").unwrap();
    assert_eq!(
        (stored.id.as_str(), stored.unsubscribed),
        (id.as_str(), true)
    );

    for r in fake.requests() {
        if r.method == Method::PATCH || r.method == Method::POST {
            assert!(!r.body.contains("unsubscribed"), "{r:?}");
        }
    }
    assert_eq!(
        fake.count(Method::PATCH, "/contacts/ada%2Bnews@example.com")
            + fake.count(Method::PATCH, "/contacts/ada+news@example.com"),
        1
    );

    assert!(client.delete_contact(&id).await.unwrap());
    assert!(!client.delete_contact(&id).await.unwrap());
    assert_eq!(client.get_contact(&id).await.unwrap(), None);
    let err = client.update_contact(&id, &patch).await.unwrap_err();
    assert!(matches!(err, ResendError::NotFound), "{err:?}");
}

#[tokio::test]
async fn create_for_an_existing_email_returns_the_existing_id_under_both_readings() {
    for mode in [ExistingEmail::Conflict, ExistingEmail::ReturnExisting] {
        let (fake, client, _) = setup(
            FakeConfig {
                existing_email: mode,
                ..FakeConfig::default()
            },
            100.0,
        )
        .await;
        let existing = fake.insert_contact("Grace@Example.com", None);
        fake.set_unsubscribed("grace@example.com", true);
        let id = client
            .create_contact(&new_contact("grace@example.com"))
            .await
            .unwrap();
        assert_eq!(id, existing, "{mode:?}");
        assert_eq!(fake.contacts().len(), 1, "{mode:?}");
        assert!(fake.contact("grace@example.com").unwrap().unsubscribed);
        let lookups = fake.count(Method::GET, "/contacts/");
        assert_eq!(
            lookups,
            usize::from(mode == ExistingEmail::Conflict),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn lists_follow_every_page() {
    let (fake, client, _) = setup(FakeConfig::default(), 1000.0).await;
    for i in 0..250 {
        fake.insert_contact(&format!("p{i}@example.com"), None);
    }
    for i in 0..120 {
        fake.insert_segment(&format!("segment-{i}"));
    }
    let contacts = client.list_contacts(None).await.unwrap();
    assert_eq!(contacts.len(), 250);
    let mut emails: Vec<_> = contacts.iter().map(|c| c.email.clone()).collect();
    emails.dedup();
    assert_eq!(emails.len(), 250);
    assert_eq!(fake.count(Method::GET, "/contacts?"), 3);
    let segments = client.list_segments().await.unwrap();
    assert_eq!(segments.len(), 120);
    assert_eq!(segments[119].name, "segment-119");
    assert_eq!(fake.count(Method::GET, "/segments?"), 2);
    assert!(fake.requests().iter().all(|r| r.path.contains("limit=100")));

    let segment = &segments[7].id;
    for i in (0..250).step_by(2) {
        fake.add_member(&format!("p{i}@example.com"), segment);
    }
    let members = client.list_contacts(Some(segment)).await.unwrap();
    assert_eq!(members.len(), 125);
    assert!(
        members
            .iter()
            .all(|c| fake.members(segment).contains(&c.email))
    );
}

/// `segments` on create: the contact joins them in the same call; an unknown id refuses the
/// whole create; an existing address is answered with its id, `existed`, and its segments
/// untouched (the fake's strictest reading of what Resend leaves undocumented).
#[tokio::test]
async fn a_create_joins_its_segments_or_nothing() {
    for mode in [ExistingEmail::Conflict, ExistingEmail::ReturnExisting] {
        let (fake, client, _) = setup(FakeConfig::default(), 1000.0).await;
        fake.set_existing_email(mode);
        let news = client.create_segment("news").await.unwrap();
        let staff = client.create_segment("staff").await.unwrap();
        let joining = |email: &str, segments: Vec<String>| NewContact {
            segments,
            ..new_contact(email)
        };
        let created = client
            .create_contact_outcome(&joining("a@example.com", vec![news.clone(), staff.clone()]))
            .await
            .unwrap();
        assert!(!created.existed);
        assert_eq!(fake.members(&news), ["a@example.com"]);
        assert_eq!(fake.members(&staff), ["a@example.com"]);
        let body = fake.requests().last().unwrap().body.clone();
        assert!(body.contains(r#""segments":["#), "{body}");

        let unknown = joining(
            "b@example.com",
            vec![news.clone(), "no-such-segment".into()],
        );
        let err = client.create_contact_outcome(&unknown).await.unwrap_err();
        assert!(matches!(err, ResendError::NotFound), "{err:?}");
        assert!(fake.contact("b@example.com").is_none(), "nothing created");

        client
            .remove_from_segment("a@example.com", &staff)
            .await
            .unwrap();
        let again = client
            .create_contact_outcome(&joining("a@example.com", vec![staff.clone()]))
            .await
            .unwrap();
        assert_eq!(again.id, created.id);
        assert!(fake.members(&staff).is_empty(), "{mode:?}: untouched");
        assert_eq!(fake.contacts().len(), 1);
        // Only a refused create can be told apart from a new one.
        assert_eq!(again.existed, mode == ExistingEmail::Conflict, "{mode:?}");
    }
}

#[tokio::test]
async fn segments_and_memberships() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let segment = client.create_segment("Team-public-default").await.unwrap();
    let listed = client.list_segments().await.unwrap();
    assert_eq!((listed.len(), listed[0].id.as_str()), (1, segment.as_str()));
    let email = "a/b+c@example.com";
    client.create_contact(&new_contact(email)).await.unwrap();

    client.add_to_segment(email, &segment).await.unwrap();
    client.add_to_segment(email, &segment).await.unwrap(); // already a member: fine
    assert_eq!(fake.members(&segment), vec![email.to_string()]);
    assert!(client.remove_from_segment(email, &segment).await.unwrap());
    assert!(!client.remove_from_segment(email, &segment).await.unwrap());
    assert!(fake.members(&segment).is_empty());

    assert!(!client.delete_contact("nobody@example.com").await.unwrap());
    let err = client
        .add_to_segment("nobody@example.com", &segment)
        .await
        .unwrap_err();
    assert!(matches!(err, ResendError::NotFound), "{err:?}");

    assert!(client.delete_segment(&segment).await.unwrap());
    assert!(!client.delete_segment(&segment).await.unwrap());
    let err = client.add_to_segment(email, &segment).await.unwrap_err();
    assert!(matches!(err, ResendError::NotFound), "{err:?}");
    assert!(client.list_segments().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_429_pauses_every_caller_until_retry_after() {
    let (fake, client, metrics) = setup(FakeConfig::default(), 100.0).await;
    fake.insert_contact("a@example.com", None);
    fake.fail_next(1, Fault::RateLimited { retry_after: 2 });
    let started = Instant::now();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.get_contact("a@example.com").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Other callers, on clones, arrive while the account is paused.
    let others: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.list_segments().await })
        })
        .collect();
    assert!(first.await.unwrap().unwrap().is_some());
    for other in others {
        other.await.unwrap().unwrap();
    }
    assert!(started.elapsed() >= Duration::from_secs(2));

    let requests = fake.requests();
    assert_eq!(requests[0].status, 429);
    let after = requests[0].at + Duration::from_secs(2);
    assert_eq!(requests.len(), 5);
    for r in &requests[1..] {
        assert!(r.at >= after, "request {r:?} within 2 s of the 429");
    }
    assert_eq!(metrics.rate_limited_count("resend"), 1);
}

#[tokio::test]
async fn rate_limited_after_bounded_retries() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    fake.fail_next(10, Fault::RateLimited { retry_after: 1 });
    let started = Instant::now();
    let err = client.get_contact("a@example.com").await.unwrap_err();
    assert!(matches!(err, ResendError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_in(), Some(Duration::from_secs(1)));
    assert_eq!(err.reason(), "RateLimited");
    assert_eq!(fake.requests().len(), 4, "one try and three retries");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// The most requests the fake received within any `window`.
fn busiest(fake: &FakeResend, window: Duration) -> usize {
    let times: Vec<Instant> = fake.requests().iter().map(|r| r.at).collect();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_exceeds_the_account_rate() {
    let (fake, client, _) = setup(
        FakeConfig {
            rate_limit: Some(10),
            ..FakeConfig::default()
        },
        10.0,
    )
    .await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    client
                        .get_contact(&format!("{t}-{i}@example.com"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(client.calls(), 30);
    assert_eq!(fake.rate_limit_violations(), 0);
    // 10 per second at most, in every second: 30 requests span at least 2 s.
    assert!(busiest(&fake, Duration::from_millis(980)) <= 10);
    let requests = fake.requests();
    let span = requests[29].at - requests[0].at;
    assert!(span >= Duration::from_millis(1950), "{span:?}");
    let average = 30.0 / (span.as_secs_f64() + 1.0);
    assert!(average <= 10.5, "{average} requests/s");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn obeys_ratelimit_remaining_when_configured_too_fast() {
    // The account allows 2/s but the client was told 100/s: Resend's headers must win.
    let (fake, client, metrics) = setup(
        FakeConfig {
            rate_limit: Some(2),
            ..FakeConfig::default()
        },
        100.0,
    )
    .await;
    for i in 0..6 {
        client
            .get_contact(&format!("{i}@example.com"))
            .await
            .unwrap();
    }
    assert_eq!(fake.rate_limit_violations(), 0);
    assert_eq!(metrics.rate_limited_count("resend"), 0);
    assert!(busiest(&fake, Duration::from_millis(950)) <= 2);
}

#[tokio::test]
async fn quota_is_reported_at_once() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    fake.fail_next(1, Fault::Quota { retry_after: 1 });
    let err = client
        .create_contact(&new_contact("a@example.com"))
        .await
        .unwrap_err();
    match &err {
        ResendError::QuotaExceeded { name, retry_in } => {
            assert_eq!(name, "daily_quota_exceeded");
            assert_eq!(*retry_in, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.reason(), "QuotaExceeded");
    assert_eq!(fake.requests().len(), 1, "no retry");
    assert!(fake.contacts().is_empty());
}

#[tokio::test]
async fn server_errors_are_transient_and_gets_are_retried_once() {
    let (fake, client, metrics) = setup(FakeConfig::default(), 100.0).await;
    fake.fail_next_matching(1, Method::POST, "/segments", Fault::ServerError);
    let err = client.create_segment("s").await.unwrap_err();
    assert!(matches!(err, ResendError::Transient { .. }), "{err:?}");
    assert_eq!(
        (err.reason(), err.is_permanent()),
        ("ProviderUnavailable", false)
    );
    assert!(fake.segments().is_empty());

    fake.fail_next(2, Fault::ServerError);
    assert!(client.get_contact("a@example.com").await.is_err());
    fake.fail_next(1, Fault::ServerError);
    assert_eq!(client.get_contact("a@example.com").await.unwrap(), None);
    assert_eq!(fake.requests().len(), 5);
    assert_eq!(metrics.request_count("resend", "get_contact", "500"), 3);
    assert_eq!(metrics.request_count("resend", "get_contact", "404"), 1);
}

#[tokio::test]
async fn a_slow_answer_is_transient_after_the_timeout() {
    let fake = fake_resend::start(FakeConfig::default()).await;
    let metrics = ProviderMetrics::unregistered();
    let mut cfg = config(&fake, "re_test_key", 100.0);
    cfg.timeout = Duration::from_millis(300);
    let client = ResendClient::new(cfg, metrics.clone()).unwrap();
    fake.fail_next(1, Fault::Delay(Duration::from_secs(2)));
    let started = Instant::now();
    let err = client.get_contact("a@example.com").await.unwrap_err();
    assert!(matches!(err, ResendError::Transient { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fake.requests().len(), 1, "a timed-out GET is not retried");
    assert_eq!(metrics.request_count("resend", "get_contact", "timeout"), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_replayed_without_a_duplicate() {
    for (fault, mode) in [
        (Fault::DropAnswer, ExistingEmail::Conflict),
        (Fault::DropAnswer, ExistingEmail::ReturnExisting),
        (Fault::DropAnswerAs500, ExistingEmail::Conflict),
    ] {
        let (fake, client, _) = setup(
            FakeConfig {
                existing_email: mode,
                ..FakeConfig::default()
            },
            100.0,
        )
        .await;
        fake.fail_next_matching(1, Method::POST, "/contacts", fault.clone());
        let err = client
            .create_contact(&new_contact("a@example.com"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ResendError::Transient { .. }),
            "{fault:?}: {err:?}"
        );
        let stored = fake
            .contact("a@example.com")
            .expect("the change was applied");
        let id = client
            .create_contact(&new_contact("a@example.com"))
            .await
            .unwrap();
        assert_eq!(id, stored.id, "{fault:?} {mode:?}");
        assert_eq!(fake.contacts().len(), 1, "{fault:?} {mode:?}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_code() {
    let fake = fake_resend::start(FakeConfig::default()).await;
    let mut registry = Registry::with_prefix("milo_webhook");
    let metrics = ProviderMetrics::register(&mut registry);
    let client = ResendClient::new(config(&fake, "re_test_key", 100.0), metrics).unwrap();
    client.get_contact("a@example.com").await.unwrap();
    client
        .create_contact(&new_contact("a@example.com"))
        .await
        .unwrap();
    client.get_contact("a@example.com").await.unwrap();
    fake.fail_next(1, Fault::RateLimited { retry_after: 0 });
    client.delete_contact("a@example.com").await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"milo_webhook_provider_requests_total{provider="resend",operation="get_contact",code="404"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="resend",operation="get_contact",code="200"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="resend",operation="create_contact",code="201"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="resend",operation="delete_contact",code="429"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="resend",operation="delete_contact",code="200"} 1"#,
        r#"milo_webhook_provider_rate_limited_total{provider="resend"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}
