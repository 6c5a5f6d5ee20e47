//! The removal and membership controllers against the scripted mock API: every request they make
//! (method, path, query, body) is checked in order, scenario by scenario, and a request the
//! script still expected when the reconcile ended fails the scenario too.
mod support;

use std::sync::Arc;
use std::time::Duration;

use milo_webhook::api::{
    Contact, ContactGroup, ContactGroupMembership, ContactGroupMembershipRemoval,
};
use milo_webhook::controllers::Action;
use milo_webhook::controllers::{
    Context, ControllerKind, ControllerSettings, Error, enrollment, membership, removal,
    retry_after,
};
use milo_webhook::metrics::{Metrics, ReconcileErrorLabels};
use milo_webhook::view::{ClusterView, Store, ViewChange, ViewKind};
use serde_json::{Value, json};
use support::mock_api::{self, Exchange, Seen};

const API: &str = "/apis/notification.miloapis.com/v1alpha1/namespaces";
/// What a reconcile that left the object settled returns: nothing until a change or a sweep.
const SETTLED: Action = Action::await_change();
const READY_MESSAGE: &str = "removed contact people/c from group groups/g";

// ---- objects ----

fn user_subject(name: &str) -> Value {
    json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": name})
}

fn contact(subject: Value) -> Contact {
    serde_json::from_value(json!({
        "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
        "metadata": {"name": "c", "namespace": "people"},
        "spec": {"email": "c@example.com", "subject": subject}
    }))
    .unwrap()
}

fn group() -> ContactGroup {
    serde_json::from_value(json!({
        "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
        "metadata": {"name": "g", "namespace": "groups"},
        "spec": {"displayName": "News", "visibility": "public"}
    }))
    .unwrap()
}

fn pair() -> Value {
    json!({
        "contactRef": {"name": "c", "namespace": "people"},
        "contactGroupRef": {"name": "g", "namespace": "groups"}
    })
}

fn membership_named(name: &str, status: Value) -> ContactGroupMembership {
    serde_json::from_value(json!({
        "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroupMembership",
        "metadata": {"name": name, "namespace": "people", "uid": format!("uid-{name}")},
        "spec": pair(),
        "status": status,
    }))
    .unwrap()
}

fn membership(status: Value) -> ContactGroupMembership {
    membership_named("m", status)
}

fn removal(status: Value) -> ContactGroupMembershipRemoval {
    serde_json::from_value(json!({
        "apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "ContactGroupMembershipRemoval",
        "metadata": {"name": "r", "namespace": "people", "uid": "uid-r", "generation": 1},
        "spec": pair(),
        "status": status,
    }))
    .unwrap()
}

fn ready_condition() -> Value {
    json!({
        "type": "Ready", "status": "True", "reason": "CreateSuccessful",
        "message": READY_MESSAGE, "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// What the view holds.
#[derive(Default)]
struct Seed {
    contact: Option<Contact>,
    group: bool,
    memberships: Vec<ContactGroupMembership>,
    removal: bool,
}

impl Seed {
    fn full(subject: Value) -> Self {
        Self {
            contact: Some(contact(subject)),
            group: true,
            ..Self::default()
        }
    }
    fn store(&self) -> Store {
        let mut store = Store::default();
        if let Some(c) = &self.contact {
            store.apply_contact(c);
        }
        if self.group {
            store.apply_group(&group());
        }
        self.memberships
            .iter()
            .for_each(|m| store.apply_membership(m));
        if self.removal {
            store.apply_removal(&removal(json!({})));
        }
        store
    }
}

// ---- requests ----

fn membership_path(name: &str) -> String {
    format!("{API}/people/contactgroupmemberships/{name}")
}

fn removal_path() -> String {
    format!("{API}/people/contactgroupmembershipremovals/r")
}

fn deleted() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200})
}

/// An Event about `kind`/`name` in `people`.
fn event(reason: &str, kind: &str, name: &str) -> Exchange {
    Exchange::event("people", reason)
        .body(json!({
            "reason": reason,
            "type": "Normal",
            "regarding": {"kind": kind, "name": name, "namespace": "people"},
        }))
        .respond(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "people"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
        }))
}

/// The removal's status apply: username (when given) and `Ready` True, and nothing else.
fn removal_status_apply(username: Option<&str>) -> Exchange {
    let mut status = json!({
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "CreateSuccessful",
            "message": READY_MESSAGE, "observedGeneration": 1,
        }]
    });
    if let Some(username) = username {
        status["username"] = json!(username);
    }
    let exchange = Exchange::patch(&format!("{}/status", removal_path()))
        .query("fieldManager=milo-webhook")
        .query("force=true")
        .body(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupMembershipRemoval",
            "status": status,
        }))
        .respond(serde_json::to_value(removal(json!({}))).unwrap());
    if username.is_none() {
        exchange.without("status.username")
    } else {
        exchange
    }
}

/// The membership's status patch: `status.username` only, never conditions.
fn username_patch(username: Value) -> Exchange {
    Exchange::patch(&format!("{}/status", membership_path("m")))
        .query("fieldManager=milo-webhook")
        .body(json!({"status": {"username": username}}))
        .without("status.conditions")
        .without("status.providers")
        .without("spec")
        .respond(serde_json::to_value(membership(json!({}))).unwrap())
}

// ---- harness ----

fn context(client: kube::Client, seed: &Seed) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Arc::new(ClusterView::offline(seed.store())),
        Arc::new(Metrics::default()),
        ControllerSettings::default(),
        None,
    ))
}

/// What a scenario leaves behind: the result, every request seen, and a context (talking to
/// nobody) sharing the scenario's metrics, for error-policy checks.
struct Outcome {
    result: Result<Action, Error>,
    seen: Vec<Seen>,
    ctx: Arc<Context>,
}

/// Runs one reconcile against `script`. The scenario's client is dropped before the script is
/// awaited, so a request the script still expected fails it.
async fn scenario<F, Fut>(
    name: &'static str,
    seed: &Seed,
    script: Vec<Exchange>,
    reconcile: F,
) -> Outcome
where
    F: FnOnce(Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let (client, server) = mock_api::client();
    let ctx = context(client, seed);
    let server = server.run(name, script);
    let result = reconcile(ctx.clone()).await;
    let metrics = ctx.metrics.clone();
    drop(ctx);
    let seen = server
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let (idle, _) = mock_api::client();
    let mut after = Context::new(
        idle,
        Arc::new(ClusterView::offline(Store::default())),
        metrics,
        ControllerSettings::default(),
        None,
    );
    after.settings.resync = RESYNC_DURATION;
    Outcome {
        result,
        seen,
        ctx: Arc::new(after),
    }
}

const RESYNC_DURATION: Duration = Duration::from_secs(600);

async fn reconcile_removal(
    name: &'static str,
    seed: &Seed,
    object: ContactGroupMembershipRemoval,
    script: Vec<Exchange>,
) -> Outcome {
    scenario(name, seed, script, |ctx| {
        removal::reconcile(Arc::new(object), ctx)
    })
    .await
}

async fn reconcile_membership(
    name: &'static str,
    seed: &Seed,
    object: ContactGroupMembership,
    script: Vec<Exchange>,
) -> Outcome {
    scenario(name, seed, script, |ctx| {
        membership::reconcile(Arc::new(object), ctx)
    })
    .await
}

/// The delay of a requeue.
fn requeue_delay(action: &Action) -> Duration {
    action
        .requeue_after()
        .unwrap_or_else(|| panic!("no requeue in {action:?}"))
}

fn errors_counted(ctx: &Context, controller: &str, error: &Error) -> u64 {
    ctx.metrics
        .controllers
        .errors
        .get_or_create(&ReconcileErrorLabels {
            controller: controller.into(),
            error: error.metric_label().into(),
        })
        .get()
}

// ---- removal controller ----

#[tokio::test]
async fn removal_deletes_the_membership_and_reports_ready() {
    let seed = Seed {
        memberships: vec![membership(json!({}))],
        removal: true,
        ..Seed::full(user_subject("u1"))
    };
    let out = reconcile_removal(
        "removal deletes membership",
        &seed,
        removal(json!({})),
        vec![
            Exchange::delete(&membership_path("m")).respond(deleted()),
            event("MembershipDeleted", "ContactGroupMembershipRemoval", "r"),
            removal_status_apply(Some("u1")),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
    assert_eq!(
        out.seen[1].body["note"],
        "deleted ContactGroupMembership people/m"
    );
    let condition = &out.seen[2].body["status"]["conditions"][0];
    assert!(condition["lastTransitionTime"].is_string(), "{condition}");
}

#[tokio::test]
async fn removal_without_memberships_only_sets_status() {
    let out = reconcile_removal(
        "removal with no memberships",
        &Seed::full(user_subject("u1")),
        removal(json!({})),
        vec![removal_status_apply(Some("u1"))],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn removal_of_a_contact_without_a_user_has_no_username() {
    let subject =
        json!({"apiGroup": "resourcemanager.miloapis.com", "kind": "Organization", "name": "o"});
    let out = reconcile_removal(
        "removal of an organization's contact",
        &Seed::full(subject),
        removal(json!({"username": "u1"})),
        vec![removal_status_apply(None)],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn removal_already_current_makes_no_request() {
    let current = removal(json!({"username": "u1", "conditions": [ready_condition()]}));
    let out = reconcile_removal(
        "removal already current",
        &Seed::full(user_subject("u1")),
        current,
        vec![],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
    assert!(out.seen.is_empty());
}

#[tokio::test]
async fn removal_whose_group_is_gone_is_deleted() {
    let seed = Seed {
        contact: Some(contact(user_subject("u1"))),
        ..Seed::default()
    };
    let out = reconcile_removal(
        "removal whose group is gone",
        &seed,
        removal(json!({})),
        vec![
            Exchange::get(&format!("{API}/groups/contactgroups/g")).not_found(),
            Exchange::delete(&removal_path()).respond(deleted()),
            event("ReferentGone", "ContactGroupMembershipRemoval", "r"),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn removal_whose_contact_lags_the_view_uses_the_contact_read() {
    let seed = Seed {
        group: true,
        ..Seed::default()
    };
    let out = reconcile_removal(
        "removal whose contact the view lags",
        &seed,
        removal(json!({})),
        vec![
            Exchange::get(&format!("{API}/people/contacts/c"))
                .respond(serde_json::to_value(contact(user_subject("u2"))).unwrap()),
            removal_status_apply(Some("u2")),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn a_delete_answered_404_counts_as_done() {
    let seed = Seed {
        memberships: vec![membership(json!({}))],
        ..Seed::full(user_subject("u1"))
    };
    let out = reconcile_removal(
        "membership already gone",
        &seed,
        removal(json!({})),
        // No Event: this controller deleted nothing.
        vec![
            Exchange::delete(&membership_path("m")).not_found(),
            removal_status_apply(Some("u1")),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_and_is_retried_with_backoff() {
    let seed = Seed {
        memberships: vec![membership(json!({}))],
        ..Seed::full(user_subject("u1"))
    };
    let out = reconcile_removal(
        "delete fails",
        &seed,
        removal(json!({})),
        vec![Exchange::delete(&membership_path("m")).fail(500, "InternalError", "etcd is sad")],
    )
    .await;
    let error = out.result.unwrap_err();
    assert!(matches!(error, Error::Kube(_)), "{error:?}");
    let action = retry_after(&out.ctx, ControllerKind::Removal, "people/r", &error);
    let delay = requeue_delay(&action);
    // The first failure waits half to all of the 500ms base.
    assert!(
        delay >= Duration::from_millis(250) && delay < Duration::from_millis(500),
        "{delay:?}"
    );
    assert_eq!(errors_counted(&out.ctx, "removal", &error), 1);
    let again = requeue_delay(&retry_after(
        &out.ctx,
        ControllerKind::Removal,
        "people/r",
        &error,
    ));
    assert!(again >= Duration::from_millis(500), "{again:?}");
}

#[tokio::test]
async fn a_status_conflict_is_retried_at_once() {
    let out = reconcile_removal(
        "status apply conflicts",
        &Seed::full(user_subject("u1")),
        removal(json!({})),
        vec![removal_status_apply(Some("u1")).fail(
            409,
            "Conflict",
            "the object has been modified",
        )],
    )
    .await;
    let error = out.result.unwrap_err();
    assert_eq!(error.metric_label(), "conflict");
    let delay = requeue_delay(&retry_after(
        &out.ctx,
        ControllerKind::Removal,
        "people/r",
        &error,
    ));
    assert!(delay < Duration::from_millis(250), "{delay:?}");
}

// ---- membership controller ----

#[tokio::test]
async fn membership_created_after_its_removal_is_deleted() {
    let seed = Seed {
        removal: true,
        ..Seed::full(user_subject("u1"))
    };
    let out = reconcile_membership(
        "membership created after its removal",
        &seed,
        membership(json!({})),
        vec![
            Exchange::get(&removal_path())
                .respond(serde_json::to_value(removal(json!({}))).unwrap()),
            Exchange::delete(&membership_path("m")).respond(deleted()),
            event("OptOutEnforced", "ContactGroupMembership", "m"),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), Action::await_change());
    let note = out.seen[2].body["note"].as_str().unwrap();
    assert!(
        note.contains("people/c") && note.contains("groups/g") && note.contains("people/r"),
        "{note}"
    );
    assert_eq!(out.seen[2].body["regarding"]["uid"], "uid-m");
}

#[tokio::test]
async fn membership_is_kept_when_the_views_removal_is_already_gone() {
    let seed = Seed {
        removal: true,
        ..Seed::full(user_subject("u1"))
    };
    let out = reconcile_membership(
        "removal deleted, contact rejoined",
        &seed,
        membership(json!({"username": "u1"})),
        vec![Exchange::get(&removal_path()).not_found()],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn membership_is_kept_while_its_removal_is_being_withdrawn() {
    let seed = Seed {
        removal: true,
        ..Seed::full(user_subject("u1"))
    };
    let mut withdrawn = serde_json::to_value(removal(json!({}))).unwrap();
    withdrawn["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    withdrawn["metadata"]["finalizers"] = json!(["example.com/audit"]);
    let out = reconcile_membership(
        "removal being deleted",
        &seed,
        membership(json!({})),
        vec![
            Exchange::get(&removal_path()).respond(withdrawn),
            username_patch(json!("u1")),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn membership_gets_its_username_when_the_contact_gains_a_user() {
    // The contact had no subject; it was given one (set from none, which the webhook allows),
    // and the view's change wakes the membership.
    let m = membership(json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "Synced", "message": "in provider",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}));
    let seed = Seed::full(user_subject("u1"));
    let mut view = seed.store();
    view.apply_membership(&m);
    let change = ViewChange::Applied(ViewKind::Contact, "people".into(), "c".into());
    let woken = membership::memberships_to_wake(&change, &view);
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].name, "m");

    let out = reconcile_membership(
        "username set from none",
        &seed,
        m,
        vec![username_patch(json!("u1"))],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn membership_username_is_cleared_when_the_contact_has_no_user() {
    // A contact deleted and recreated under the same name without a subject.
    let out = reconcile_membership(
        "username cleared",
        &Seed::full(Value::Null),
        membership(json!({"username": "u1"})),
        vec![username_patch(Value::Null)],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

#[tokio::test]
async fn membership_already_right_makes_no_request() {
    let out = reconcile_membership(
        "membership already right",
        &Seed::full(user_subject("u1")),
        membership(json!({"username": "u1"})),
        vec![],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
    assert!(out.seen.is_empty());
}

#[tokio::test]
async fn membership_whose_contact_is_gone_is_deleted() {
    let seed = Seed {
        group: true,
        ..Seed::default()
    };
    let out = reconcile_membership(
        "contact gone",
        &seed,
        membership(json!({"username": "u1"})),
        vec![
            Exchange::get(&format!("{API}/people/contacts/c")).not_found(),
            Exchange::delete(&membership_path("m")).respond(deleted()),
            event("ReferentGone", "ContactGroupMembership", "m"),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), Action::await_change());
    assert_eq!(
        out.seen[2].body["note"],
        "deleted: its contact people/c no longer exists"
    );
}

#[tokio::test]
async fn membership_whose_contact_only_lags_the_view_is_kept() {
    let seed = Seed {
        group: true,
        ..Seed::default()
    };
    let out = reconcile_membership(
        "contact missing from a lagging view",
        &seed,
        membership(json!({})),
        vec![
            Exchange::get(&format!("{API}/people/contacts/c"))
                .respond(serde_json::to_value(contact(user_subject("u1"))).unwrap()),
            username_patch(json!("u1")),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
    assert!(out.seen.iter().all(|s| s.method != http::Method::DELETE));
}

#[tokio::test]
async fn membership_whose_group_is_gone_is_deleted_even_if_already_deleted() {
    let seed = Seed {
        contact: Some(contact(user_subject("u1"))),
        ..Seed::default()
    };
    let out = reconcile_membership(
        "group gone, membership already deleted",
        &seed,
        membership(json!({"username": "u1"})),
        // The DELETE finds it gone: success, and no Event.
        vec![
            Exchange::get(&format!("{API}/groups/contactgroups/g")).not_found(),
            Exchange::delete(&membership_path("m")).not_found(),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn membership_status_patch_error_is_retried_with_backoff() {
    let out = reconcile_membership(
        "status patch fails",
        &Seed::full(user_subject("u1")),
        membership(json!({})),
        vec![username_patch(json!("u1")).fail(503, "ServiceUnavailable", "try later")],
    )
    .await;
    let error = out.result.unwrap_err();
    let action = retry_after(&out.ctx, ControllerKind::Membership, "people/m", &error);
    assert_ne!(action, Action::await_change());
    assert!(requeue_delay(&action) < Duration::from_millis(500));
    assert_eq!(errors_counted(&out.ctx, "membership", &error), 1);
}

#[tokio::test]
async fn memberships_and_removals_being_deleted_are_left_alone() {
    let at = json!("2026-01-01T00:00:00Z");
    let mut m = serde_json::to_value(membership(json!({}))).unwrap();
    m["metadata"]["deletionTimestamp"] = at.clone();
    let out = reconcile_membership(
        "membership being deleted",
        &Seed::default(),
        serde_json::from_value(m).unwrap(),
        vec![],
    )
    .await;
    assert_eq!(out.result.unwrap(), Action::await_change());
    let mut r = serde_json::to_value(removal(json!({}))).unwrap();
    r["metadata"]["deletionTimestamp"] = at;
    let out = reconcile_removal(
        "removal being deleted",
        &Seed::default(),
        serde_json::from_value(r).unwrap(),
        vec![],
    )
    .await;
    assert_eq!(out.result.unwrap(), Action::await_change());
}

// ---- enrollment finalizer ----

/// A membership a policy created, being deleted and holding the enrollment finalizer.
fn going_enrollment_membership() -> Value {
    let mut m = serde_json::to_value(membership(json!({}))).unwrap();
    m["metadata"]["annotations"] = json!({
        enrollment::POLICY_NAME_ANNOTATION: "newsletter",
        enrollment::POLICY_UID_ANNOTATION: "uid-newsletter",
    });
    m["metadata"]["finalizers"] = json!([enrollment::FINALIZER, "other.example/keep"]);
    m["metadata"]["deletionTimestamp"] = json!("2026-06-01T00:00:00Z");
    m["metadata"]["resourceVersion"] = json!("7");
    m
}

/// As a policy's membership goes, the contact is recorded for that policy (its uid named) before
/// the finalizer is released, and other finalizers stay: the membership is the record until then.
#[tokio::test]
async fn a_policys_membership_records_its_contact_before_it_goes() {
    let seed = Seed::full(user_subject("u1"));
    let going = going_enrollment_membership();
    let object: ContactGroupMembership = serde_json::from_value(going.clone()).unwrap();
    let key = enrollment::record_key("newsletter");
    let out = reconcile_membership(
        "a policy's membership goes",
        &seed,
        object,
        vec![
            Exchange::get(&membership_path("m")).respond(going.clone()),
            Exchange::patch(&format!("{API}/people/contacts/c"))
                .query("fieldManager=milo-webhook")
                .body(json!({"metadata": {"annotations": {&key: "enrolled/uid-newsletter"}}}))
                .respond(serde_json::to_value(contact(user_subject("u1"))).unwrap()),
            Exchange::get(&membership_path("m")).respond(going.clone()),
            Exchange::patch(&membership_path("m"))
                .query("fieldManager=milo-webhook")
                .body(json!({"metadata": {"finalizers": ["other.example/keep"],
                    "resourceVersion": "7"}}))
                .respond(going),
        ],
    )
    .await;
    assert_eq!(out.result.unwrap(), SETTLED);
}

/// A failed record write keeps the finalizer: the membership stays the record, and the write is
/// retried.
#[tokio::test]
async fn a_failed_record_keeps_the_membership_holding() {
    let seed = Seed::full(user_subject("u1"));
    let going = going_enrollment_membership();
    let object: ContactGroupMembership = serde_json::from_value(going.clone()).unwrap();
    let out = reconcile_membership(
        "the record fails",
        &seed,
        object,
        vec![
            Exchange::get(&membership_path("m")).respond(going),
            Exchange::patch(&format!("{API}/people/contacts/c")).fail(
                500,
                "InternalError",
                "etcd timeout",
            ),
        ],
    )
    .await;
    assert!(out.result.is_err());
}

/// A membership whose view row shows the finalizer while it goes needs work; once released (or
/// for one that never held it) it needs none.
#[test]
fn only_a_going_membership_holding_the_finalizer_needs_release() {
    let store = Seed::full(user_subject("u1")).store();
    let held: ContactGroupMembership =
        serde_json::from_value(going_enrollment_membership()).unwrap();
    assert_eq!(
        membership::plan(&held, &store),
        membership::Plan::ReleaseEnrollment
    );
    let mut released = held.clone();
    released.metadata.finalizers = Some(vec!["other.example/keep".into()]);
    assert_eq!(membership::plan(&released, &store), membership::Plan::Skip);
    let mut view = store.clone();
    view.apply_membership(&held);
    let from_view = view.membership_object("people", "m").unwrap();
    assert_eq!(
        membership::plan(&from_view, &view),
        membership::Plan::ReleaseEnrollment
    );
}
