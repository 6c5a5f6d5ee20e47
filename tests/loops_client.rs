//! The Loops client against the stateful fake: auth, the upsert by `userId` (create, update and
//! email change in place, lists, conflicts), find, delete, lists, the account rate limit (its own
//! pace, Loops' headers, 429 pauses), lost answers, signed events, and that `subscribed: true` is
//! never sent unless the caller chose it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::Method;
use milo_webhook::providers::loops::events::{self, LoopsEvent, ReceiveError};
use milo_webhook::providers::loops::{
    Consent, ContactUpsert, LoopsClient, LoopsConfig, LoopsError, LoopsSigningKey, Subscribed,
};
use milo_webhook::providers::metrics::ProviderMetrics;
use milo_webhook::providers::svix::SvixError;
use prometheus_client::registry::Registry;
use support::fake_loops::{self, FakeConfig, FakeLoops, Fault};

const UA: &str = "milo-webhook-test/1";

fn config(fake: &FakeLoops, key: &str, rate: f64) -> LoopsConfig {
    LoopsConfig {
        base_url: format!("{}/", fake.base_url),
        api_key: key.into(),
        rate_limit: rate,
        user_agent: UA.into(),
        timeout: Duration::from_secs(5),
    }
}

async fn setup(fake_config: FakeConfig, rate: f64) -> (FakeLoops, LoopsClient, ProviderMetrics) {
    let fake = fake_loops::start(fake_config).await;
    let metrics = ProviderMetrics::unregistered();
    let client = LoopsClient::new(config(&fake, fake_loops::API_KEY, rate), metrics.clone())
        .expect("client");
    (fake, client, metrics)
}

fn upsert(user_id: &str, email: &str) -> ContactUpsert {
    ContactUpsert {
        first_name: Some("Ada".into()),
        ..ContactUpsert::new(user_id, email)
    }
}

#[tokio::test]
async fn every_request_carries_user_agent_and_key_and_a_wrong_key_is_unauthorized() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    assert_eq!(client.check_api_key().await.unwrap(), "Fake team");
    client.list_mailing_lists().await.unwrap();
    client.find_by_user_id("u1").await.unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.user_agent.as_deref(), Some(UA), "{r:?}");
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer loops_test_key"),
            "{r:?}"
        );
    }
    assert_eq!(client.calls(), 3);

    let wrong = LoopsClient::new(
        config(&fake, "not-the-key", 100.0),
        ProviderMetrics::unregistered(),
    )
    .unwrap();
    let err = wrong.check_api_key().await.unwrap_err();
    assert_eq!(
        err,
        LoopsError::Unauthorized {
            status: 401,
            message: "Invalid API key".into()
        }
    );
    assert!(err.is_permanent() && !err.is_retryable());
    assert_eq!(err.reason(), "InvalidApiKey");
}

#[tokio::test]
async fn upsert_creates_then_updates_in_place_by_user_id() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let news = fake.insert_list("News", true);
    let staff = fake.insert_list("Staff", false);
    let mut first = upsert("uid-1", "ada+news@example.com");
    first.mailing_lists = BTreeMap::from([(news.clone(), true)]);
    let id = client.upsert_contact(&first).await.unwrap();
    let stored = fake.contact_by_user_id("uid-1").expect("created");
    assert_eq!(stored.id, id);
    assert_eq!(stored.email, "ada+news@example.com");
    assert_eq!(stored.first_name.as_deref(), Some("Ada"));
    assert!(stored.subscribed, "Loops' default for a new contact");
    assert_eq!(fake.members(&news), ["ada+news@example.com"]);

    // A new address, another list, one list off: the same contact, changed in place.
    let mut second = ContactUpsert::new("uid-1", "ada@example.org");
    second.last_name = Some("Lovelace".into());
    second.mailing_lists = BTreeMap::from([(news.clone(), false), (staff.clone(), true)]);
    assert_eq!(client.upsert_contact(&second).await.unwrap(), id);
    let stored = fake.contact_by_user_id("uid-1").unwrap();
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(
        (stored.email.as_str(), stored.first_name.as_deref()),
        ("ada@example.org", Some("Ada")),
        "email changed, an unsent name left alone"
    );
    assert_eq!(stored.last_name.as_deref(), Some("Lovelace"));
    assert!(fake.members(&news).is_empty());
    assert_eq!(fake.members(&staff), ["ada@example.org"]);
    assert!(fake.contact_by_email("ada+news@example.com").is_none());
}

#[tokio::test]
async fn an_opt_out_survives_every_upsert_that_does_not_decide_otherwise() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let list = fake.insert_list("News", true);
    client
        .upsert_contact(&upsert("uid-1", "a@example.com"))
        .await
        .unwrap();
    // The person unsubscribes through a link in Loops' mail.
    fake.set_subscribed("a@example.com", false);
    let mut again = upsert("uid-1", "a@example.com");
    again.first_name = Some("Augusta".into());
    again.mailing_lists = BTreeMap::from([(list.clone(), true)]);
    client.upsert_contact(&again).await.unwrap();
    let stored = fake.contact_by_user_id("uid-1").unwrap();
    assert!(!stored.subscribed, "the opt-out is kept");
    assert_eq!(stored.first_name.as_deref(), Some("Augusta"));

    // A contact created for someone who opted out in the cluster is created unsubscribed.
    let opted_out = ContactUpsert {
        subscribed: Subscribed::respecting_opt_out(true),
        ..upsert("uid-2", "b@example.com")
    };
    client.upsert_contact(&opted_out).await.unwrap();
    assert!(!fake.contact_by_user_id("uid-2").unwrap().subscribed);
}

#[tokio::test]
async fn a_contact_made_outside_is_adopted_and_one_held_by_another_user_is_a_conflict() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let list = fake.insert_list("News", true);
    let form = fake.insert_contact("Grace@Example.com", None);
    fake.set_subscribed("grace@example.com", false);
    let id = client
        .upsert_contact(&upsert("uid-g", "grace@example.com"))
        .await
        .unwrap();
    assert_eq!(id, form, "the form's contact is given the userId");
    let stored = fake.contact_by_user_id("uid-g").unwrap();
    assert!(!stored.subscribed, "and keeps its opt-out");
    assert_eq!(fake.contacts().len(), 1);

    fake.insert_contact("other@example.com", Some("uid-other"));
    let mut taking = upsert("uid-g", "other@example.com");
    taking.mailing_lists = BTreeMap::from([(list.clone(), true)]);
    let err = client.upsert_contact(&taking).await.unwrap_err();
    assert!(matches!(err, LoopsError::Conflict { .. }), "{err:?}");
    assert!(err.is_permanent());
    let mut fresh = upsert("uid-new", "other@example.com");
    fresh.mailing_lists = taking.mailing_lists.clone();
    let err = client.upsert_contact(&fresh).await.unwrap_err();
    assert!(matches!(err, LoopsError::Conflict { .. }), "{err:?}");
    assert_eq!(
        fake.contact_by_user_id("uid-g").unwrap().email,
        "grace@example.com"
    );
    assert!(fake.members(&list).is_empty(), "nothing applied");
    assert!(fake.contact_by_user_id("uid-new").is_none());
}

#[tokio::test]
async fn an_unknown_list_refuses_the_whole_upsert_and_bad_arguments_send_nothing() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let news = fake.insert_list("News", true);
    let mut bad = upsert("uid-1", "a@example.com");
    bad.mailing_lists = BTreeMap::from([(news.clone(), true), ("no-such-list".into(), true)]);
    let err = client.upsert_contact(&bad).await.unwrap_err();
    assert!(
        matches!(&err, LoopsError::Invalid { status: 400, message } if message.contains("no-such-list")),
        "{err:?}"
    );
    assert!(fake.contacts().is_empty());
    let sent = fake.requests().len();
    for refused in [
        ContactUpsert::new(" ", "a@example.com"),
        ContactUpsert::new("uid-1", ""),
    ] {
        let err = client.upsert_contact(&refused).await.unwrap_err();
        assert!(
            matches!(err, LoopsError::Invalid { status: 0, .. }),
            "{err:?}"
        );
    }
    assert!(client.find_by_email("").await.is_err());
    assert!(client.delete_by_user_id("").await.is_err());
    assert_eq!(fake.requests().len(), sent, "refused before sending");
}

#[tokio::test]
async fn find_delete_and_lists() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    let news = fake.insert_list("News", true);
    let staff = fake.insert_list("Staff", false);
    let lists = client.list_mailing_lists().await.unwrap();
    assert_eq!(lists.len(), 2);
    assert_eq!(
        (lists[0].id.as_str(), lists[0].is_public),
        (news.as_str(), true)
    );
    assert_eq!(
        (lists[1].name.as_str(), lists[1].is_public),
        ("Staff", false)
    );

    let mut new = upsert("uid-1", "a+b@example.com");
    new.mailing_lists = BTreeMap::from([(staff.clone(), true)]);
    let id = client.upsert_contact(&new).await.unwrap();
    let by_email = client
        .find_by_email("a+b@example.com")
        .await
        .unwrap()
        .unwrap();
    let by_user = client.find_by_user_id("uid-1").await.unwrap().unwrap();
    assert_eq!(by_email, by_user);
    assert_eq!(by_user.id, id);
    assert!(by_user.subscribed && by_user.on_list(&staff) && !by_user.on_list(&news));
    assert_eq!(
        client.find_by_email("nobody@example.com").await.unwrap(),
        None
    );
    assert_eq!(client.find_by_user_id("uid-2").await.unwrap(), None);

    assert!(client.delete_by_user_id("uid-1").await.unwrap());
    assert!(
        !client.delete_by_user_id("uid-1").await.unwrap(),
        "already gone"
    );
    assert!(fake.contacts().is_empty());
}

#[tokio::test]
async fn a_429_pauses_every_caller_until_retry_after() {
    let (fake, client, metrics) = setup(FakeConfig::default(), 100.0).await;
    fake.fail_next(
        1,
        Fault::RateLimited {
            retry_after: Some(2),
        },
    );
    let started = Instant::now();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.list_mailing_lists().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let others: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.find_by_user_id(&format!("u{i}")).await })
        })
        .collect();
    first.await.unwrap().unwrap();
    for other in others {
        other.await.unwrap().unwrap();
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    let requests = fake.requests();
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests.len(), 5);
    let after = requests[0].at + Duration::from_secs(2);
    for r in &requests[1..] {
        assert!(r.at >= after, "request {r:?} within 2 s of the 429");
    }
    assert_eq!(metrics.rate_limited_count("loops"), 1);
}

#[tokio::test]
async fn a_429_without_retry_after_waits_a_second_and_retries_are_bounded() {
    let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
    fake.fail_next(10, Fault::RateLimited { retry_after: None });
    let started = Instant::now();
    let err = client.list_mailing_lists().await.unwrap_err();
    assert_eq!(
        err,
        LoopsError::RateLimited {
            retry_in: Duration::from_secs(1)
        }
    );
    assert_eq!(err.retry_in(), Some(Duration::from_secs(1)));
    assert_eq!(fake.requests().len(), 4, "one try and three retries");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// The most requests the fake received within any `window`.
fn busiest(fake: &FakeLoops, window: Duration) -> usize {
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
    let limited = FakeConfig {
        rate_limit: Some(10),
        ..FakeConfig::default()
    };
    let (fake, client, _) = setup(limited, 10.0).await;
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    let new =
                        ContactUpsert::new(format!("u{t}-{i}"), format!("{t}-{i}@example.com"));
                    client.upsert_contact(&new).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(client.calls(), 30);
    assert_eq!(fake.rate_limit_violations(), 0);
    assert_eq!(fake.contacts().len(), 30);
    assert!(busiest(&fake, Duration::from_millis(980)) <= 10);
    let requests = fake.requests();
    let span = requests[29].at - requests[0].at;
    assert!(span >= Duration::from_millis(1950), "{span:?}");
}

#[tokio::test]
async fn loops_headers_win_over_a_rate_configured_too_fast() {
    // The account allows 3/s, the client was told 100/s: x-ratelimit-* must win, with no 429.
    let limited = FakeConfig {
        rate_limit: Some(3),
        ..FakeConfig::default()
    };
    let (fake, client, metrics) = setup(limited, 100.0).await;
    for i in 0..8 {
        client.find_by_user_id(&format!("u{i}")).await.unwrap();
    }
    assert_eq!(fake.rate_limit_violations(), 0);
    assert_eq!(metrics.rate_limited_count("loops"), 0);
    assert!(busiest(&fake, Duration::from_millis(950)) <= 3);
    assert_eq!(
        client.limiter().rate(),
        3.0,
        "lowered to the account's limit"
    );
}

#[tokio::test]
async fn a_lost_upsert_answer_is_retried_without_a_duplicate() {
    for fault in [Fault::DropAnswer, Fault::DropAnswerAs500] {
        let (fake, client, _) = setup(FakeConfig::default(), 100.0).await;
        let list = fake.insert_list("News", true);
        let mut new = upsert("uid-1", "a@example.com");
        new.mailing_lists = BTreeMap::from([(list.clone(), true)]);
        fake.fail_next_matching(1, Method::PUT, "/contacts/update", fault.clone());
        let id = client.upsert_contact(&new).await.unwrap();
        assert_eq!(fake.contacts().len(), 1, "{fault:?}");
        assert_eq!(fake.contact_by_user_id("uid-1").unwrap().id, id);
        assert_eq!(fake.count(Method::PUT, "/contacts/update"), 2, "{fault:?}");
        assert_eq!(fake.members(&list), ["a@example.com"]);

        // Lost twice: the caller hears of it, and its own retry still makes no second contact.
        fake.fail_next_matching(2, Method::PUT, "/contacts/update", fault.clone());
        let err = client
            .upsert_contact(&upsert("uid-2", "b@example.com"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LoopsError::Transient { .. }),
            "{fault:?}: {err:?}"
        );
        assert!(fake.contact_by_user_id("uid-2").is_some(), "applied");
        client
            .upsert_contact(&upsert("uid-2", "b@example.com"))
            .await
            .unwrap();
        assert_eq!(fake.contacts().len(), 2, "{fault:?}");
    }
}

#[tokio::test]
async fn server_errors_are_transient_and_a_timeout_is_not_retried() {
    let fake = fake_loops::start(FakeConfig::default()).await;
    let metrics = ProviderMetrics::unregistered();
    let mut cfg = config(&fake, fake_loops::API_KEY, 100.0);
    cfg.timeout = Duration::from_millis(300);
    let client = LoopsClient::new(cfg, metrics.clone()).unwrap();
    fake.fail_next(2, Fault::ServerError);
    let err = client.list_mailing_lists().await.unwrap_err();
    assert!(matches!(err, LoopsError::Transient { .. }), "{err:?}");
    assert_eq!(
        (err.reason(), err.is_retryable()),
        ("ProviderUnavailable", true)
    );
    fake.fail_next(1, Fault::ServerError);
    client.list_mailing_lists().await.unwrap();
    assert_eq!(
        metrics.request_count("loops", "list_mailing_lists", "500"),
        3
    );

    fake.fail_next(1, Fault::Delay(Duration::from_secs(2)));
    let started = Instant::now();
    let err = client.find_by_user_id("u1").await.unwrap_err();
    assert!(matches!(err, LoopsError::Transient { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fake.count(Method::GET, "/contacts/find"), 1, "not retried");
    assert_eq!(metrics.request_count("loops", "find_contact", "timeout"), 1);
}

#[tokio::test]
async fn no_call_sends_subscribed_true_unless_the_caller_chose_it() {
    let (fake, client, _) = setup(FakeConfig::default(), 1000.0).await;
    let list = fake.insert_list("News", true);
    // A whole sync's worth of calls, for people subscribed, opted out, and in between.
    for i in 0..6 {
        let mut call = upsert(&format!("uid-{i}"), &format!("p{i}@example.com"));
        call.subscribed = Subscribed::respecting_opt_out(i % 2 == 0);
        call.mailing_lists = BTreeMap::from([(list.clone(), i % 3 != 0)]);
        client.upsert_contact(&call).await.unwrap();
        client.upsert_contact(&call).await.unwrap();
        client.find_by_user_id(&format!("uid-{i}")).await.unwrap();
    }
    fake.set_subscribed("p1@example.com", false);
    client
        .upsert_contact(&upsert("uid-1", "p1-new@example.com"))
        .await
        .unwrap();
    client.delete_by_user_id("uid-5").await.unwrap();
    assert!(
        fake.subscribed_true_writes().is_empty(),
        "{:?}",
        fake_loops::calls(&fake.requests())
    );
    assert!(!fake.contact_by_user_id("uid-1").unwrap().subscribed);
    let falses = fake
        .requests()
        .iter()
        .filter(|r| r.subscribed() == Some(serde_json::Value::Bool(false)))
        .count();
    assert_eq!(falses, 6, "the opted-out three, twice each");

    // The one way to send true: the person's own request, named.
    let back = ContactUpsert {
        subscribed: Subscribed::Resubscribe(Consent::given_by_person(
            "rejoined via preference page",
        )),
        ..ContactUpsert::new("uid-1", "p1-new@example.com")
    };
    client.upsert_contact(&back).await.unwrap();
    let trues = fake.subscribed_true_writes();
    assert_eq!(trues.len(), 1);
    assert!(trues[0].body.contains("uid-1"), "{:?}", trues[0]);
    assert!(fake.contact_by_user_id("uid-1").unwrap().subscribed);
}

#[tokio::test]
async fn signed_events_are_accepted_and_forged_altered_stale_or_weak_ones_refused() {
    let fake = fake_loops::start(FakeConfig::default()).await;
    let list = fake.insert_list("News", true);
    fake.insert_contact("a@example.com", Some("uid-1"));
    fake.set_on_list("a@example.com", &list, true);
    let key = LoopsSigningKey::parse(&fake.signing_secret()).unwrap();
    let now = jiff::Timestamp::now();

    let left = fake.leave_list("a@example.com", &list).unwrap();
    assert!(fake.members(&list).is_empty(), "the fake's state followed");
    let delivery = events::receive(&key, &left.headers(), &left.body, now).unwrap();
    assert_eq!(delivery.id, left.id);
    let LoopsEvent::MailingListUnsubscribed(event) = &delivery.event else {
        panic!("{delivery:?}");
    };
    assert_eq!(event.list.id, list);
    assert_eq!(event.contact.user_id.as_deref(), Some("uid-1"));
    assert!((event.time.as_second() - now.as_second()).abs() <= 5);

    let joined = fake.join_list("a@example.com", &list).unwrap();
    let delivery = events::receive(&key, &joined.headers(), &joined.body, now).unwrap();
    assert!(matches!(
        delivery.event,
        LoopsEvent::MailingListSubscribed(_)
    ));
    let all = fake.unsubscribe_from_all("a@example.com").unwrap();
    let delivery = events::receive(&key, &all.headers(), &all.body, now).unwrap();
    assert!(matches!(delivery.event, LoopsEvent::Unsubscribed(_)));
    assert!(!fake.contact_by_email("a@example.com").unwrap().subscribed);
    let other = fake.sign_event(&serde_json::json!({"eventName": "email.opened", "eventTime": 1}));
    let delivery = events::receive(&key, &other.headers(), &other.body, now).unwrap();
    assert_eq!(delivery.event.event_name(), "email.opened");

    let refused = |e: &fake_loops::events::SignedEvent, at: jiff::Timestamp| {
        events::receive(&key, &e.headers(), &e.body, at).unwrap_err()
    };
    assert_eq!(
        refused(&left.forged(), now),
        ReceiveError::Signature(SvixError::Mismatch)
    );
    let altered = left.with_body(
        String::from_utf8(left.body.clone())
            .unwrap()
            .replace("uid-1", "uid-2")
            .into_bytes(),
    );
    assert_eq!(
        refused(&altered, now),
        ReceiveError::Signature(SvixError::Mismatch)
    );
    let secret = fake.signing_secret();
    for (offset, ok) in [
        (-300, true),
        (300, true),
        (-301, false),
        (301, false),
        (-3600, false),
    ] {
        let sent = left.sent_at(&secret, now + jiff::SignedDuration::from_secs(offset));
        let result = events::receive(&key, &sent.headers(), &sent.body, now);
        assert_eq!(result.is_ok(), ok, "sent {offset} s from now: {result:?}");
        if !ok {
            assert!(matches!(
                result,
                Err(ReceiveError::Signature(SvixError::Stale(_)))
            ));
        }
    }
    let mut headerless = left.headers();
    headerless.remove("webhook-timestamp");
    assert_eq!(
        events::receive(&key, &headerless, &left.body, now).unwrap_err(),
        ReceiveError::Signature(SvixError::Missing("webhook-timestamp"))
    );
    // A secret shorter than 24 bytes is refused before anything is verified with it.
    assert!(matches!(
        LoopsSigningKey::parse("whsec_c2hvcnQtc2VjcmV0"),
        Err(SvixError::ShortSecret { len: 12, min: 24 })
    ));
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_code() {
    let fake = fake_loops::start(FakeConfig::default()).await;
    let mut registry = Registry::with_prefix("milo_webhook");
    let metrics = ProviderMetrics::register(&mut registry);
    let client = LoopsClient::new(config(&fake, fake_loops::API_KEY, 100.0), metrics).unwrap();
    client.find_by_user_id("u1").await.unwrap();
    client
        .upsert_contact(&upsert("u1", "a@example.com"))
        .await
        .unwrap();
    fake.fail_next(
        1,
        Fault::RateLimited {
            retry_after: Some(0),
        },
    );
    client.delete_by_user_id("u1").await.unwrap();
    client.delete_by_user_id("u1").await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"milo_webhook_provider_requests_total{provider="loops",operation="find_contact",code="200"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="loops",operation="upsert_contact",code="200"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="loops",operation="delete_contact",code="429"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="loops",operation="delete_contact",code="200"} 1"#,
        r#"milo_webhook_provider_requests_total{provider="loops",operation="delete_contact",code="404"} 1"#,
        r#"milo_webhook_provider_rate_limited_total{provider="loops"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}
