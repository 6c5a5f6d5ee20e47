//! The fake Loops itself, spoken to in raw HTTP: it must refuse at least what Loops documents as
//! refused (and the strict readings its module documentation lists), so that code passing
//! against it does not depend on a lenient server.

mod support;

use serde_json::{Value, json};
use support::fake_loops::{self, FakeConfig, FakeLoops};

async fn send(fake: &FakeLoops, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client
        .request(method, format!("{}{path}", fake.base_url))
        .bearer_auth(fake_loops::API_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn refuses_what_loops_refuses_and_applies_nothing_of_a_refused_upsert() {
    let fake = fake_loops::start(FakeConfig::default()).await;
    let list = fake.insert_list("News", true);
    fake.insert_contact("held@example.com", Some("uid-held"));
    let cases = [
        (json!({"firstName": "A"}), 400, "no email or userId"),
        (
            json!({"userId": "uid-1"}),
            400,
            "cannot create without an email",
        ),
        (
            json!({"userId": "uid-1", "email": "not-an-email"}),
            400,
            "email",
        ),
        (
            json!({"userId": "uid-1", "email": "a@example.com", "plan": "pro"}),
            400,
            "custom",
        ),
        (
            json!({"userId": "uid-1", "email": "a@example.com", "subscribed": "yes"}),
            400,
            "bool",
        ),
        (
            json!({"userId": "uid-1", "email": "a@example.com", "mailingLists": {list.clone(): true, "nope": true}}),
            400,
            "unknown list",
        ),
        (
            json!({"userId": "uid-1", "email": "a@example.com", "mailingLists": {list.clone(): "yes"}}),
            400,
            "list flag",
        ),
        (
            json!({"userId": "uid-1", "email": "held@example.com"}),
            409,
            "email of another user",
        ),
        (
            json!({"email": "a@example.com", "userId": ""}),
            400,
            "empty userId",
        ),
    ];
    for (body, status, why) in cases {
        let (got, answer) = send(&fake, "PUT", "/contacts/update", Some(body)).await;
        assert_eq!(got, status, "{why}: {answer}");
        assert_eq!(answer["success"], json!(false), "{why}");
    }
    assert_eq!(fake.contacts().len(), 1, "nothing applied");
    assert!(fake.members(&list).is_empty());

    // A second contact's email, asked for by the first's userId: refused, both unchanged.
    send(
        &fake,
        "PUT",
        "/contacts/update",
        Some(json!({"userId": "uid-1", "email": "a@example.com"})),
    )
    .await;
    let (status, _) = send(
        &fake,
        "PUT",
        "/contacts/update",
        Some(json!({"userId": "uid-1", "email": "held@example.com"})),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        fake.contact_by_user_id("uid-1").unwrap().email,
        "a@example.com"
    );

    for query in [
        "",
        "?email=a%40example.com&userId=uid-1",
        "?email=",
        "?name=x",
    ] {
        let (status, _) = send(&fake, "GET", &format!("/contacts/find{query}"), None).await;
        assert_eq!(status, 400, "find{query}");
    }
    for body in [
        json!({}),
        json!({"email": "a@example.com", "userId": "uid-1"}),
        json!([]),
    ] {
        let (status, _) = send(&fake, "POST", "/contacts/delete", Some(body.clone())).await;
        assert_eq!(status, 400, "delete {body}");
    }
    let (status, answer) = send(
        &fake,
        "POST",
        "/contacts/delete",
        Some(json!({"userId": "nobody"})),
    )
    .await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (404, Some("Contact not found."))
    );
    let (status, _) = send(&fake, "DELETE", "/contacts/delete", None).await;
    assert_eq!(status, 405);
    assert_eq!(fake.contacts().len(), 2);
}

#[tokio::test]
async fn the_key_and_the_account_rate_are_enforced_with_loops_headers() {
    let fake = fake_loops::start(FakeConfig {
        rate_limit: Some(2),
        ..FakeConfig::default()
    })
    .await;
    let response = reqwest::Client::new()
        .get(format!("{}/lists", fake.base_url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "Invalid API key"})
    );

    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(format!("{}/lists", fake.base_url))
            .bearer_auth(fake_loops::API_KEY)
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        seen.push((
            response.status().as_u16(),
            header("x-ratelimit-limit"),
            header("x-ratelimit-remaining"),
            header("retry-after"),
        ));
    }
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        seen,
        [
            (200, s("2"), s("1"), None),
            (200, s("2"), s("0"), None),
            (429, s("2"), s("0"), None),
        ]
    );
    assert_eq!(fake.rate_limit_violations(), 1);
}
