//! The usercontact controller against the scripted mock API: every request it makes (method,
//! path, body) is checked in order, scenario by scenario.
mod support;

use std::sync::Arc;

use milo_webhook::api::iam::UserSpec;
use milo_webhook::api::notification::{ContactSpec, SubjectRef};
use milo_webhook::api::{Contact, User};
use milo_webhook::controllers::Action;
use milo_webhook::controllers::usercontact::{reconcile, users_to_wake};
use milo_webhook::controllers::{
    Context, ControllerKind, ControllerSettings, Error, names, retry_after,
};
use milo_webhook::metrics::{Metrics, ReconcileErrorLabels};
use milo_webhook::view::{ClusterView, Store, ViewChange, ViewKind};
use serde_json::{Value, json};
use support::mock_api::{self, ApiServer, Exchange, Seen};

const NS: &str = "milo-system";
/// What a reconcile that left the User settled returns: nothing until a change or a sweep.
const RESYNC: Action = Action::await_change();

fn contacts_path(ns: &str) -> String {
    format!("/apis/notification.miloapis.com/v1alpha1/namespaces/{ns}/contacts")
}

fn contact_path(ns: &str, name: &str) -> String {
    format!("{}/{name}", contacts_path(ns))
}

fn user(name: &str, email: &str, given: Option<&str>, family: Option<&str>) -> User {
    let mut user = User::new(
        name,
        UserSpec {
            email: email.into(),
            given_name: given.map(Into::into),
            family_name: family.map(Into::into),
        },
    );
    user.metadata.uid = Some(format!("uid-{name}"));
    user
}

fn ada() -> User {
    user("ada", "ada@example.com", Some("Ada"), Some("Lovelace"))
}

fn subject(user: &str) -> Value {
    json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": user})
}

fn contact(ns: &str, name: &str, email: &str, subject_of: Option<&str>) -> Contact {
    let mut contact = Contact::new(
        name,
        ContactSpec {
            email: email.into(),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            subject: subject_of.map(|user| SubjectRef {
                api_group: "iam.miloapis.com".into(),
                kind: "User".into(),
                name: user.into(),
                namespace: None,
            }),
        },
    );
    contact.metadata.namespace = Some(ns.into());
    contact
}

fn contact_json(contact: &Contact) -> Value {
    serde_json::to_value(contact).unwrap()
}

/// The Event the Recorder posts about a User: cluster-scoped objects' Events go to `default`.
fn event(reason: &str, user: &str) -> Exchange {
    Exchange::post("/apis/events.k8s.io/v1/namespaces/default/events")
        .body(json!({
            "reason": reason,
            "type": "Normal",
            "regarding": {"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User", "name": user},
        }))
        .respond(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
        }))
}

fn context(client: kube::Client, users: &[&User], contacts: &[&Contact]) -> Arc<Context> {
    let mut store = Store::default();
    users.iter().for_each(|u| store.apply_user(u));
    contacts.iter().for_each(|c| store.apply_contact(c));
    Arc::new(Context::new(
        client,
        Arc::new(ClusterView::offline(store)),
        Arc::new(Metrics::default()),
        ControllerSettings::default(),
        None,
    ))
}

/// Runs one reconcile of `user` against `script` and returns its result and every request seen.
async fn scenario(
    name: &'static str,
    user: &User,
    contacts: &[&Contact],
    script: Vec<Exchange>,
) -> (Result<Action, Error>, Vec<Seen>, Arc<Context>) {
    let (client, server): (kube::Client, ApiServer) = mock_api::client();
    let ctx = context(client, &[user], contacts);
    let server = server.run(name, script);
    let result = reconcile(Arc::new(user.clone()), ctx.clone()).await;
    // Once every client is gone the script ends; a request it still expected fails it. The
    // context handed back shares the view and metrics but talks to nobody.
    let used = ctx;
    let ctx = Arc::new(Context {
        client: fake_client(),
        view: used.view.clone(),
        metrics: used.metrics.clone(),
        settings: used.settings.clone(),
        events: milo_webhook::controllers::events::EventPublisher::new(
            fake_client(),
            "test",
            None,
            Default::default(),
        ),
        backoff: Default::default(),
        resend: None,
        loops: None,
        schemas: Default::default(),
        check_crds: false,
        enrollment_records: Default::default(),
    });
    drop(used);
    let seen = server
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    (result, seen, ctx)
}

/// A client nobody answers, for contexts that only compute error policies.
fn fake_client() -> kube::Client {
    mock_api::client().0
}

/// No Event note names an email address.
fn assert_no_email_in_events(seen: &[Seen]) {
    for step in seen.iter().filter(|s| s.path.contains("/events")) {
        let note = step.body["note"].as_str().unwrap_or_default();
        assert!(!note.contains('@'), "event note leaks an email: {note}");
    }
}

#[tokio::test]
async fn signup_creates_the_contact() {
    let ada = ada();
    let (result, seen, _) = scenario(
        "signup creates the contact",
        &ada,
        &[],
        vec![
            Exchange::post(&contacts_path(NS))
                .query("fieldManager=milo-webhook")
                .body(json!({
                    "metadata": {
                        "name": "user-ada", "namespace": NS,
                        "ownerReferences": [{"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User", "name": "ada", "uid": "uid-ada"}],
                    },
                    "spec": {
                        "email": "ada@example.com", "givenName": "Ada", "familyName": "Lovelace",
                        "subject": subject("ada"),
                    },
                }))
                .respond(contact_json(&contact(NS, "user-ada", "ada@example.com", Some("ada")))),
            event("ContactCreated", "ada"),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), RESYNC);
    assert_eq!(
        seen[1].body["note"],
        "Created Contact milo-system/user-ada for the User"
    );
    assert_no_email_in_events(&seen);
}

#[tokio::test]
async fn a_matching_contact_needs_nothing_but_a_read() {
    let ada = ada();
    let own = contact(NS, "user-ada", "ada@example.com", Some("ada"));
    let (result, seen, _) = scenario(
        "second reconcile of a matching contact",
        &ada,
        &[&own],
        vec![Exchange::get(&contact_path(NS, "user-ada")).respond(contact_json(&own))],
    )
    .await;
    assert_eq!(result.unwrap(), RESYNC);
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn a_user_change_patches_only_the_changed_spec_fields() {
    let ada = user(
        "ada",
        "ada.king@example.com",
        Some("Augusta"),
        Some("Lovelace"),
    );
    let own = contact(NS, "user-ada", "ada@example.com", Some("ada"));
    let (result, seen, _) = scenario(
        "user email and name change",
        &ada,
        &[&own],
        vec![
            Exchange::get(&contact_path(NS, "user-ada")).respond(contact_json(&own)),
            Exchange::patch(&contact_path(NS, "user-ada"))
                .query("fieldManager=milo-webhook")
                .body(json!({"spec": {"email": "ada.king@example.com", "givenName": "Augusta"}}))
                .without("spec.subject")
                .without("spec.familyName")
                .without("metadata")
                .respond(contact_json(&own)),
            event("ContactUpdated", "ada"),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), RESYNC);
    assert_eq!(
        seen[1].body,
        json!({"spec": {"email": "ada.king@example.com", "givenName": "Augusta"}}),
        "the patch carries the changed fields and nothing else"
    );
    assert_no_email_in_events(&seen);
}

#[tokio::test]
async fn an_unlinked_contact_with_the_email_in_another_case_is_adopted() {
    let ada = user("ada", "Ada@Example.com", Some("Ada"), None);
    let loose = contact("team", "ada", "ada@EXAMPLE.com", None);
    let (result, seen, _) = scenario(
        "adopt unlinked contact",
        &ada,
        &[&loose],
        vec![
            Exchange::patch(&contact_path("team", "ada"))
                .query("fieldManager=milo-webhook")
                .body(json!({"spec": {
                    "subject": subject("ada"),
                    "email": "Ada@Example.com",
                    "givenName": "Ada",
                    "familyName": null,
                }}))
                .without("metadata")
                .respond(contact_json(&contact(
                    "team",
                    "ada",
                    "Ada@Example.com",
                    Some("ada"),
                ))),
            event("ContactAdopted", "ada"),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), RESYNC);
    assert!(
        seen.iter()
            .all(|s| s.method != http::Method::POST || s.path.contains("/events"))
    );
    assert_no_email_in_events(&seen);
}

#[tokio::test]
async fn already_existing_own_contact_is_fine() {
    let ada = ada();
    let own = contact(NS, "user-ada", "ada@example.com", Some("ada"));
    // The view has not seen the contact yet (it was created by the previous leader, say).
    let (result, seen, _) = scenario(
        "create finds our own contact",
        &ada,
        &[],
        vec![
            Exchange::post(&contacts_path(NS)).already_exists(),
            Exchange::get(&contact_path(NS, "user-ada")).respond(contact_json(&own)),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), RESYNC);
    assert_eq!(seen.len(), 2, "no write and no event");
}

#[tokio::test]
async fn already_existing_contact_of_someone_else_is_an_error() {
    let ada = ada();
    let theirs = contact(NS, "user-ada", "other@example.com", Some("mallory"));
    let (result, seen, ctx) = scenario(
        "create finds someone else's contact",
        &ada,
        &[],
        vec![
            Exchange::post(&contacts_path(NS)).already_exists(),
            Exchange::get(&contact_path(NS, "user-ada")).respond(contact_json(&theirs)),
        ],
    )
    .await;
    let error = result.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    assert!(
        text.contains("milo-system/user-ada") && text.contains("taken"),
        "{text}"
    );
    assert!(!text.contains('@'), "{text}");
    assert_eq!(seen.len(), 2);
    let action = retry_after(&ctx, ControllerKind::UserContact, "ada", &error);
    assert!(format!("{action:?}").contains("Some("), "{action:?}");
}

#[tokio::test]
async fn a_webhook_denial_of_an_email_change_is_retried_with_backoff() {
    let ada = user("ada", "taken@example.com", Some("Ada"), Some("Lovelace"));
    let own = contact(NS, "user-ada", "ada@example.com", Some("ada"));
    let (result, _, ctx) = scenario(
        "email change denied",
        &ada,
        &[&own],
        vec![
            Exchange::get(&contact_path(NS, "user-ada")).respond(contact_json(&own)),
            Exchange::patch(&contact_path(NS, "user-ada"))
                .body(json!({"spec": {"email": "taken@example.com"}}))
                .deny(
                    422,
                    "Invalid",
                    "admission webhook denied the request: Contact.notification.miloapis.com \"user-ada\" is invalid: spec.email: Duplicate value: \"taken@example.com\"",
                    &["FieldValueDuplicate"],
                ),
        ],
    )
    .await;
    let error = result.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("milo-system/user-ada") && text.contains("FieldValueDuplicate"),
        "{text}"
    );
    assert!(
        !text.contains('@'),
        "the denial's message quotes the email: {text}"
    );
    let action = retry_after(&ctx, ControllerKind::UserContact, "ada", &error);
    assert_ne!(action, Action::await_change());
    assert_ne!(action, RESYNC);
    let errors = ctx
        .metrics
        .controllers
        .errors
        .get_or_create(&ReconcileErrorLabels {
            controller: "usercontact".into(),
            error: error.metric_label().into(),
        })
        .get();
    assert_eq!(errors, 1);
}

#[tokio::test]
async fn an_email_held_by_another_users_contact_makes_no_request() {
    let ada = ada();
    let bobs = contact("team", "bob", "ADA@example.com", Some("bob"));
    let (result, seen, _) = scenario("email held elsewhere", &ada, &[&bobs], vec![]).await;
    let text = result.unwrap_err().to_string();
    assert!(text.contains("team/bob") && !text.contains('@'), "{text}");
    assert!(seen.is_empty());
}

#[tokio::test]
async fn a_deleting_user_is_left_alone() {
    let mut ada = ada();
    ada.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::UNIX_EPOCH,
    ));
    let (result, seen, _) = scenario("deleting user", &ada, &[], vec![]).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(seen.is_empty());
}

#[tokio::test]
async fn a_very_long_user_name_gets_a_valid_hashed_contact_name() {
    let long = format!("{}.example", "u".repeat(245));
    assert_eq!(long.len(), 253, "the longest valid User name");
    let someone = user(&long, "long@example.com", None, None);
    let name = names::user_contact(&long);
    assert_ne!(name, format!("user-{long}"));
    assert!(name.len() <= 253 && name.starts_with("user-uuu"), "{name}");
    assert!(
        name.split('.').all(|label| !label.is_empty()
            && label.starts_with(|c: char| c.is_ascii_alphanumeric())
            && label.ends_with(|c: char| c.is_ascii_alphanumeric())
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')),
        "{name}"
    );
    let (result, _, _) = scenario(
        "long user name",
        &someone,
        &[],
        vec![
            Exchange::post(&contacts_path(NS))
                .body(json!({
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"email": "long@example.com", "subject": subject(&long)},
                }))
                .without("spec.givenName")
                .without("spec.familyName")
                .respond(contact_json(&contact(
                    NS,
                    &name,
                    "long@example.com",
                    Some(&long),
                ))),
            event("ContactCreated", &long),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), RESYNC);
}

#[test]
fn the_change_feed_wakes_the_right_users() {
    let ada = ada();
    let eve = user("eve", "Eve@example.com", None, None);
    let mut store = Store::default();
    store.apply_user(&ada);
    store.apply_user(&eve);
    // Ada's contact still has her old address: she needs work, so changes concerning her wake
    // her. A User whose contact is current is not woken at all (see below).
    store.apply_contact(&contact(NS, "user-ada", "ada@old.example.com", Some("ada")));
    store.apply_contact(&contact("team", "eve", "eve@example.com", None));
    let wake = |change: ViewChange| -> Vec<String> {
        users_to_wake(&change, &store, NS)
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    let c = |ns: &str, n: &str| (ViewKind::Contact, ns.to_owned(), n.to_owned());
    let (k, ns, n) = c(NS, "user-ada");
    assert_eq!(wake(ViewChange::Applied(k, ns, n)), ["ada"]);
    let (k, ns, n) = c("team", "eve");
    assert_eq!(
        wake(ViewChange::Applied(k, ns, n)),
        ["eve"],
        "unlinked: users with its email"
    );
    let (k, ns, n) = c(NS, "user-eve");
    assert_eq!(
        wake(ViewChange::Deleted(k, ns, n)),
        ["eve"],
        "deleted: by name"
    );
    let (k, ns, n) = c("team", "eve");
    assert!(
        wake(ViewChange::Deleted(k, ns, n)).is_empty(),
        "not attributable"
    );
    assert_eq!(
        wake(ViewChange::Applied(
            ViewKind::User,
            String::new(),
            "ada".into()
        )),
        ["ada"]
    );
    assert!(wake(ViewChange::Relisted(ViewKind::Contact)).is_empty());

    let mut current = Store::default();
    current.apply_user(&ada);
    current.apply_contact(&contact(NS, "user-ada", "ada@example.com", Some("ada")));
    let user_changed = ViewChange::Applied(ViewKind::User, String::new(), "ada".into());
    assert!(
        users_to_wake(&user_changed, &current, NS).is_empty(),
        "her contact already carries her email and names"
    );
    let renamed = user("ada", "ada@example.com", Some("Augusta"), Some("Lovelace"));
    current.apply_user(&renamed);
    assert_eq!(users_to_wake(&user_changed, &current, NS).len(), 1);
}
