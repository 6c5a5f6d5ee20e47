//! The enrollment controller against a scripted mock API: each scenario states the observed state
//! (the view, the contact store, the policy) and every request the reconcile must make, in order,
//! with its method, path and body.
mod support;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use milo_webhook::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval,
};
use milo_webhook::controllers::Action;
use milo_webhook::controllers::enrollment::{
    self, EnrollmentContext, FINALIZER, GROUP_MISSING_RETRY, POLICY_LABEL, POLICY_NAME_ANNOTATION,
    POLICY_UID_ANNOTATION, record_key,
};
use milo_webhook::controllers::{Context, ControllerSettings, Error, names};
use milo_webhook::metrics::{Metrics, PolicyLabels, ReconcileErrorLabels};
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};
use support::mock_api::{self, Exchange};

const API: &str = "/apis/notification.miloapis.com/v1alpha1";
const API_VERSION: &str = "notification.miloapis.com/v1alpha1";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const GROUPS_NS: &str = "groups";
const NS: &str = "people";
const POLICY_CREATED: &str = "2026-05-01T00:00:00Z";
const OLD: &str = "2026-01-01T00:00:00Z";
const NEW: &str = "2026-06-01T00:00:00Z";
const RESYNC: Duration = Duration::from_secs(600);

// ---- observed state ----

fn group(name: &str) -> ContactGroup {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": GROUPS_NS},
        "spec": {"displayName": name, "visibility": "public"}
    }))
    .unwrap()
}

fn policy(name: &str, group: &str, backfill: bool) -> ContactGroupEnrollmentPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1,
            "creationTimestamp": POLICY_CREATED},
        "spec": {"contactGroupRef": {"name": group, "namespace": GROUPS_NS},
            "trigger": {"type": "ContactCreated"},
            "contactSelector": {"subjectKind": "User"},
            "backfill": backfill}
    }))
    .unwrap()
}

/// `policy` as it reads after a pass wrote this status.
fn with_status(
    mut p: ContactGroupEnrollmentPolicy,
    enrolled: i64,
    skipped: i64,
) -> ContactGroupEnrollmentPolicy {
    let group = p.spec.contact_group_ref.clone();
    let mut status = json!({
        "observedGeneration": 1,
        "contactsEnrolled": enrolled,
        "contactsSkippedOptOut": skipped,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Active",
            "message": format!("enrolling contacts into {}/{}", group.namespace, group.name),
            "lastTransitionTime": POLICY_CREATED, "observedGeneration": 1}]
    });
    if !p.spec.backfill {
        // No contact shares the policy's second in these scenarios: the boundary is empty.
        status["sameSecondContacts"] = json!([]);
    }
    p.status = Some(serde_json::from_value(status).unwrap());
    p
}

fn contact(name: &str, created: &str, records: &[(&str, &str)]) -> Contact {
    let annotations: serde_json::Map<String, Value> = records
        .iter()
        .map(|(policy, value)| (record_key(policy), json!(value)))
        .chain([("kubectl.kubernetes.io/last-applied".to_owned(), json!("{}"))])
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
            "annotations": annotations},
        "spec": {"email": format!("{name}@example.com"),
            "subject": {"apiGroup": "iam.miloapis.com", "kind": "User", "name": name}}
    }))
    .unwrap()
}

fn machine_contact(name: &str) -> Contact {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": NEW},
        "spec": {"email": format!("{name}@example.com")}
    }))
    .unwrap()
}

fn pair(contact: &str, group: &str) -> Value {
    json!({"contactRef": {"name": contact, "namespace": NS},
        "contactGroupRef": {"name": group, "namespace": GROUPS_NS}})
}

fn existing_membership(name: &str, contact: &str, group: &str) -> ContactGroupMembership {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": NS}, "spec": pair(contact, group)}),
    )
    .unwrap()
}

fn removal(contact: &str, group: &str) -> ContactGroupMembershipRemoval {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{contact}-leaves-{group}"), "namespace": NS},
        "spec": pair(contact, group)
    }))
    .unwrap()
}

struct Harness {
    ctx: Arc<EnrollmentContext>,
    metrics: Arc<Metrics>,
}

/// A leader's enrollment context: the view holds `store` and `contacts` (with the controllers'
/// fields, as the leader's view does), and nothing is remembered yet.
fn leader(client: Client, mut store: Store, contacts: Vec<Contact>) -> Harness {
    for contact in &contacts {
        store.apply_contact(contact);
    }
    let metrics = Arc::new(Metrics::default());
    // One write at a time, so the script can state their order; the window is tested apart.
    let settings = ControllerSettings {
        resync: RESYNC,
        enrollment_concurrency: 1,
        ..ControllerSettings::default()
    };
    let view = Arc::new(ClusterView::offline(store));
    let shared = Arc::new(Context::new(
        client,
        view,
        metrics.clone(),
        settings,
        Some("milo-webhook-0".into()),
    ));
    Harness {
        ctx: Arc::new(EnrollmentContext::new(shared)),
        metrics,
    }
}

fn store_with(groups: &[&str]) -> Store {
    let mut store = Store::default();
    for name in groups {
        store.apply_group(&group(name));
    }
    store
}

impl Harness {
    async fn reconcile(&self, policy: &ContactGroupEnrollmentPolicy) -> Result<Action, Error> {
        enrollment::reconcile(Arc::new(policy.clone()), self.ctx.clone()).await
    }
    fn enrollments(&self, policy: &str) -> u64 {
        let labels = PolicyLabels {
            policy: policy.into(),
        };
        self.metrics
            .controllers
            .enrollments
            .get_or_create(&labels)
            .get()
    }
    fn opt_out_skips(&self, policy: &str) -> u64 {
        let labels = PolicyLabels {
            policy: policy.into(),
        };
        self.metrics
            .controllers
            .opt_out_skips
            .get_or_create(&labels)
            .get()
    }
}

// ---- expected requests ----

fn create_membership(policy: &str, contact: &str, group: &str) -> Exchange {
    let name = names::enrollment_membership(policy, contact);
    let object = json!({
        "apiVersion": API_VERSION, "kind": "ContactGroupMembership",
        "metadata": {"name": name, "namespace": NS,
            "labels": {POLICY_LABEL: names::label_safe(policy)},
            "annotations": {POLICY_NAME_ANNOTATION: policy,
                POLICY_UID_ANNOTATION: format!("uid-{policy}")},
            "finalizers": [FINALIZER]},
        "spec": pair(contact, group)
    });
    Exchange::post(&format!("{API}/namespaces/{NS}/contactgroupmemberships"))
        .query("fieldManager=milo-webhook")
        .body(object.clone())
        .without("metadata.ownerReferences")
        .without("status")
        .respond(object)
}

/// The record a policy fixture writes: the outcome and the policy's uid (`uid-<policy>`).
fn record(policy: &str, contact: &str, outcome: &str) -> Exchange {
    let value = format!("{outcome}/uid-{policy}");
    Exchange::patch(&format!("{API}/namespaces/{NS}/contacts/{contact}"))
        .query("fieldManager=milo-webhook")
        .body(json!({"metadata": {"annotations": {record_key(policy): value}}}))
        .without("spec")
        .respond(json!({
            "apiVersion": API_VERSION, "kind": "Contact",
            "metadata": {"name": contact, "namespace": NS,
                "annotations": {record_key(policy): value}},
            "spec": {"email": format!("{contact}@example.com")}
        }))
}

fn event(reason: &str, policy: &str, contact: &str, note: String) -> Exchange {
    Exchange::post(EVENTS)
        .body(json!({
            "reason": reason, "type": "Normal", "note": note,
            "reportingController": "milo-webhook", "reportingInstance": "milo-webhook-0",
            "regarding": {"kind": "ContactGroupEnrollmentPolicy", "apiVersion": API_VERSION,
                "name": policy, "uid": format!("uid-{policy}")},
            "related": {"kind": "Contact", "name": contact, "namespace": NS}
        }))
        .respond(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": format!("{policy}.1"), "namespace": "default"},
            "eventTime": "2026-06-01T00:00:00.000000Z"
        }))
}

fn enrolled_event(policy: &str, contact: &str, group: &str) -> Exchange {
    let note = format!("enrolled contact {NS}/{contact} into group {GROUPS_NS}/{group}");
    event("Enrolled", policy, contact, note)
}

fn skipped_event(policy: &str, contact: &str, group: &str) -> Exchange {
    let note =
        format!("contact {NS}/{contact} opted out of group {GROUPS_NS}/{group}; not enrolled");
    event("SkippedOptOut", policy, contact, note)
}

fn status(
    policy: &str,
    ready: bool,
    reason: &str,
    message: String,
    counts: (i64, i64),
) -> Exchange {
    let condition = json!({"type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": reason, "message": message, "observedGeneration": 1});
    Exchange::patch(&format!(
        "{API}/contactgroupenrollmentpolicies/{policy}/status"
    ))
    .query("fieldManager=milo-webhook")
    .query("force=true")
    .body(json!({
        "apiVersion": API_VERSION, "kind": "ContactGroupEnrollmentPolicy",
        "status": {"observedGeneration": 1, "conditions": [condition],
            "contactsEnrolled": counts.0, "contactsSkippedOptOut": counts.1}
    }))
    .without("spec")
    .respond(json!({
        "apiVersion": API_VERSION, "kind": "ContactGroupEnrollmentPolicy",
        "metadata": {"name": policy},
        "spec": {"contactGroupRef": {"name": "g", "namespace": GROUPS_NS},
            "trigger": {"type": "ContactCreated"}}
    }))
}

fn active(policy: &str, group: &str, counts: (i64, i64)) -> Exchange {
    let message = format!("enrolling contacts into {GROUPS_NS}/{group}");
    status(policy, true, "Active", message, counts)
}

/// A pass that finished: nothing until a change or a sweep.
fn settled() -> Action {
    Action::await_change()
}

// ---- scenarios ----

#[tokio::test]
async fn new_contact_enrolled_by_two_policies() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "new contact enrolled by two policies",
        vec![
            create_membership("all-users", "alice", "everyone"),
            enrolled_event("all-users", "alice", "everyone"),
            active("all-users", "everyone", (1, 0)),
            create_membership("newsletter", "alice", "news"),
            enrolled_event("newsletter", "alice", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    // `robot` has no User subject, so neither policy's selector matches it.
    let contacts = vec![contact("alice", NEW, &[]), machine_contact("robot")];
    let h = leader(client, store_with(&["everyone", "news"]), contacts);
    let all_users = policy("all-users", "everyone", false);
    let newsletter = policy("newsletter", "news", false);
    assert_eq!(h.reconcile(&all_users).await.unwrap(), settled());
    assert_eq!(h.reconcile(&newsletter).await.unwrap(), settled());
    let seen = script.await.unwrap();
    assert_eq!(
        seen.len(),
        6,
        "one write enrolls: no record beside the membership"
    );
    assert!(
        seen.iter()
            .all(|s| !s.body.to_string().contains("@example.com")),
        "no request carries an address"
    );
    assert_eq!(
        (h.enrollments("all-users"), h.enrollments("newsletter")),
        (1, 1)
    );

    // A pass right after, before the contact store shows the records: nothing more is sent (the
    // script is over, so any request would fail the reconcile).
    let all_users = with_status(all_users, 1, 0);
    assert_eq!(h.reconcile(&all_users).await.unwrap(), settled());
    assert_eq!(h.enrollments("all-users"), 1);
}

#[tokio::test]
async fn two_policies_for_the_same_group_create_one_membership() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "two policies, one group",
        vec![
            create_membership("signup", "alice", "everyone"),
            enrolled_event("signup", "alice", "everyone"),
            active("signup", "everyone", (1, 0)),
            // The view has not seen the first membership yet; the second policy still does not
            // create one, and records that the contact was already a member.
            record("signup-copy", "alice", "already-member"),
            active("signup-copy", "everyone", (0, 0)),
        ],
    );
    let h = leader(
        client,
        store_with(&["everyone"]),
        vec![contact("alice", NEW, &[])],
    );
    // Run side by side: passes of policies for the same group take turns.
    let (signup, copy) = (
        policy("signup", "everyone", false),
        policy("signup-copy", "everyone", false),
    );
    let (first, second) = tokio::join!(h.reconcile(&signup), h.reconcile(&copy));
    assert_eq!(first.unwrap(), settled());
    assert_eq!(second.unwrap(), settled());
    let seen = script.await.unwrap();
    let posts = seen
        .iter()
        .filter(|s| s.path.ends_with("/contactgroupmemberships"));
    assert_eq!(posts.count(), 1);
    assert_eq!(
        (h.enrollments("signup"), h.enrollments("signup-copy")),
        (1, 0)
    );
}

#[tokio::test]
async fn opted_out_contact_is_skipped() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "opted-out contact skipped",
        vec![
            record("newsletter", "alice", "opted-out"),
            skipped_event("newsletter", "alice", "news"),
            active("newsletter", "news", (0, 1)),
        ],
    );
    let mut store = store_with(&["news"]);
    store.apply_removal(&removal("alice", "news"));
    let h = leader(client, store, vec![contact("alice", NEW, &[])]);
    let result = h.reconcile(&policy("newsletter", "news", false)).await;
    assert_eq!(result.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.opt_out_skips("newsletter"), 1);
    assert_eq!(h.enrollments("newsletter"), 0);
}

#[tokio::test]
async fn a_recreated_policy_evaluates_contacts_afresh() {
    // alice carries a record from an earlier policy of the same name (another uid), which was
    // deleted and recreated to point at another group: the new policy enrolls her.
    let contacts = vec![contact(
        "alice",
        NEW,
        &[("newsletter", "enrolled/uid-of-the-deleted-policy")],
    )];
    let (client, server) = mock_api::client();
    let script = server.run(
        "recreated policy",
        vec![
            create_membership("newsletter", "alice", "news"),
            enrolled_event("newsletter", "alice", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    let h = leader(client, store_with(&["news"]), contacts);
    let result = h.reconcile(&policy("newsletter", "news", false)).await;
    assert_eq!(result.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("newsletter"), 1);
}

#[tokio::test]
async fn membership_deleted_then_not_re_added() {
    // The contact was enrolled and recorded; the membership has since been deleted.
    let contacts = || vec![contact("alice", NEW, &[("newsletter", "enrolled")])];
    let newsletter = policy("newsletter", "news", false);

    // Status already says so: not a single request.
    let (client, server) = mock_api::client();
    let script = server.run("membership deleted, status current", vec![]);
    let h = leader(client, store_with(&["news"]), contacts());
    let result = h.reconcile(&with_status(newsletter.clone(), 1, 0)).await;
    assert_eq!(result.unwrap(), settled());
    assert!(script.await.unwrap().is_empty());

    // Status not written yet: only the status, which counts the recorded enrollment.
    let (client, server) = mock_api::client();
    let script = server.run(
        "membership deleted, status stale",
        vec![active("newsletter", "news", (1, 0))],
    );
    let h = leader(client, store_with(&["news"]), contacts());
    assert_eq!(h.reconcile(&newsletter).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("newsletter"), 0);
}

#[tokio::test]
async fn policy_created_after_contacts_with_backfill() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "backfill enrolls old contacts",
        vec![
            create_membership("all-users", "new-carol", "everyone"),
            enrolled_event("all-users", "new-carol", "everyone"),
            create_membership("all-users", "old-alice", "everyone"),
            enrolled_event("all-users", "old-alice", "everyone"),
            create_membership("all-users", "old-bob", "everyone"),
            enrolled_event("all-users", "old-bob", "everyone"),
            active("all-users", "everyone", (3, 0)),
        ],
    );
    let contacts = vec![
        contact("old-bob", OLD, &[]),
        contact("new-carol", NEW, &[]),
        contact("old-alice", OLD, &[]),
    ];
    let h = leader(client, store_with(&["everyone"]), contacts);
    let result = h.reconcile(&policy("all-users", "everyone", true)).await;
    assert_eq!(result.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("all-users"), 3);
}

#[tokio::test]
async fn policy_created_after_contacts_without_backfill() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "no backfill: old contacts untouched",
        vec![
            create_membership("all-users", "new-carol", "everyone"),
            enrolled_event("all-users", "new-carol", "everyone"),
            active("all-users", "everyone", (1, 0)),
        ],
    );
    let contacts = vec![
        contact("old-bob", OLD, &[]),
        contact("new-carol", NEW, &[]),
        contact("old-alice", OLD, &[]),
    ];
    let h = leader(client, store_with(&["everyone"]), contacts);
    let result = h.reconcile(&policy("all-users", "everyone", false)).await;
    assert_eq!(result.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("all-users"), 1);
}

/// The policy's status patch carrying the same-second boundary `list` and these counts.
fn boundary_status(policy: &str, list: &[&str], counts: (i64, i64)) -> Exchange {
    active(policy, "everyone", counts).body(json!({"status": {
        "sameSecondContacts": list,
        "contactsEnrolled": counts.0, "contactsSkippedOptOut": counts.1}}))
}

#[tokio::test]
async fn in_the_policys_own_second_only_contacts_created_after_it_are_enrolled() {
    // Both contacts carry the policy's own creation second; the view saw "early" before the
    // policy and "late" after it. The boundary is written before anything is enrolled.
    let (client, server) = mock_api::client();
    let script = server.run(
        "same second, both ways",
        vec![
            boundary_status("all-users", &["people/early"], (0, 0)),
            create_membership("all-users", "late", "everyone"),
            enrolled_event("all-users", "late", "everyone"),
            boundary_status("all-users", &["people/early"], (1, 0)),
        ],
    );
    let policy = policy("all-users", "everyone", false);
    let mut store = store_with(&["everyone"]);
    store.apply_contact(&contact("early", POLICY_CREATED, &[]));
    store.apply_policy(&policy);
    store.apply_contact(&contact("late", POLICY_CREATED, &[]));
    let h = leader(client, store, Vec::new());
    assert_eq!(h.reconcile(&policy).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("all-users"), 1);
}

#[tokio::test]
async fn a_new_leader_keeps_the_recorded_boundary() {
    // The old leader wrote the boundary and crashed before enrolling "late". The new leader
    // lists the policy and the contacts in one relist, which says nothing about their order:
    // the recorded boundary decides, the same way.
    let (client, server) = mock_api::client();
    let script = server.run(
        "recorded boundary after a handover",
        vec![
            create_membership("all-users", "late", "everyone"),
            enrolled_event("all-users", "late", "everyone"),
            boundary_status("all-users", &["people/early"], (1, 0)),
        ],
    );
    let mut policy = with_status(policy("all-users", "everyone", false), 0, 0);
    if let Some(status) = policy.status.as_mut() {
        status.same_second_contacts = Some(vec!["people/early".into()]);
    }
    let mut store = store_with(&["everyone"]);
    store.set_listing(milo_webhook::view::ViewKind::EnrollmentPolicy, true);
    store.apply_policy(&policy);
    let contacts = vec![
        contact("late", POLICY_CREATED, &[]),
        contact("early", POLICY_CREATED, &[]),
    ];
    let h = leader(client, store, contacts);
    assert_eq!(h.reconcile(&policy).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("all-users"), 1);
}

#[tokio::test]
async fn group_missing_then_created() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "group missing then created",
        vec![
            Exchange::get(&format!("{API}/namespaces/{GROUPS_NS}/contactgroups/news")).not_found(),
            status(
                "newsletter",
                false,
                "ContactGroupNotFound",
                format!("contact group {GROUPS_NS}/news does not exist"),
                (0, 0),
            ),
            // The group appeared in the view: enrollment resumes.
            create_membership("newsletter", "alice", "news"),
            enrolled_event("newsletter", "alice", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    let h = leader(client, Store::default(), vec![contact("alice", NEW, &[])]);
    let newsletter = policy("newsletter", "news", false);
    let waiting = h.reconcile(&newsletter).await.unwrap();
    assert_eq!(waiting, Action::requeue(GROUP_MISSING_RETRY));
    assert_eq!(h.enrollments("newsletter"), 0);
    h.ctx.shared.view.write().apply_group(&group("news"));
    assert_eq!(h.reconcile(&newsletter).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(h.enrollments("newsletter"), 1);
}

#[tokio::test]
async fn group_missing_from_a_lagging_view_is_confirmed_by_the_api() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "view lags the group",
        vec![
            Exchange::get(&format!("{API}/namespaces/{GROUPS_NS}/contactgroups/news")).respond(
                json!({"apiVersion": API_VERSION, "kind": "ContactGroup",
                    "metadata": {"name": "news", "namespace": GROUPS_NS},
                    "spec": {"displayName": "News", "visibility": "public"}}),
            ),
            create_membership("newsletter", "alice", "news"),
            enrolled_event("newsletter", "alice", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    let h = leader(client, Store::default(), vec![contact("alice", NEW, &[])]);
    let result = h.reconcile(&policy("newsletter", "news", false)).await;
    assert_eq!(result.unwrap(), settled());
    script.await.unwrap();
}

/// One write enrolls, and a crash anywhere is safe: a failed create is retried; a membership
/// holding the finalizer is the record (nothing written); a recorded contact is left alone; a
/// membership made before the finalizer existed gets its record written.
#[tokio::test]
async fn a_crash_around_the_create_enrolls_at_most_once() {
    let newsletter = policy("newsletter", "news", false);
    let (client, server) = mock_api::client();
    let script = server.run(
        "create fails after the record",
        vec![
            create_membership("newsletter", "alice", "news").fail(
                500,
                "InternalError",
                "etcd timeout",
            ),
            // The same leader's next pass retries the create.
            create_membership("newsletter", "alice", "news"),
            enrolled_event("newsletter", "alice", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    let first = leader(
        client,
        store_with(&["news"]),
        vec![contact("alice", NEW, &[])],
    );
    let error = first.reconcile(&newsletter).await.unwrap_err();
    assert!(
        matches!(error, Error::Kube(kube::Error::Api(ref s)) if s.code == 500),
        "{error}"
    );
    assert_eq!(first.enrollments("newsletter"), 0);
    let errors = ReconcileErrorLabels {
        controller: "enrollment".into(),
        error: "api".into(),
    };
    let retry = enrollment::error_policy(Arc::new(newsletter.clone()), &error, first.ctx.clone());
    assert_ne!(retry, Action::await_change());
    assert_eq!(
        first
            .metrics
            .controllers
            .errors
            .get_or_create(&errors)
            .get(),
        1
    );

    assert_eq!(first.reconcile(&newsletter).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(first.enrollments("newsletter"), 1);

    // Had the leader died after the create, a new one sees the membership holding the
    // finalizer: counted, nothing written.
    let (client, server) = mock_api::client();
    let script = server.run(
        "a new leader after a crash past the create",
        vec![active("newsletter", "news", (1, 0))],
    );
    let mut store = store_with(&["news"]);
    let ours = names::enrollment_membership("newsletter", "alice");
    let mut held = existing_membership(&ours, "alice", "news");
    held.metadata.finalizers = Some(vec![FINALIZER.into()]);
    store.apply_membership(&held);
    let replay = leader(client, store, vec![contact("alice", NEW, &[])]);
    assert_eq!(replay.reconcile(&newsletter).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(replay.enrollments("newsletter"), 0);

    // Once the person has left, the membership's finalizer has recorded the contact: a new
    // leader creates nothing, and nobody is brought back without their own act.
    let (client, server) = mock_api::client();
    let script = server.run(
        "a new leader after the crash",
        vec![active("newsletter", "news", (1, 0))],
    );
    let recorded = contact("alice", NEW, &[("newsletter", "enrolled/uid-newsletter")]);
    let replay = leader(client, store_with(&["news"]), vec![recorded]);
    assert_eq!(replay.reconcile(&newsletter).await.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(replay.enrollments("newsletter"), 0);

    // A contact not recorded whose membership (made before the finalizer existed) the view
    // already shows: only the record.
    let (client, server) = mock_api::client();
    let script = server.run(
        "replay with the membership in view",
        vec![
            record("newsletter", "alice", "enrolled"),
            enrolled_event("newsletter", "alice", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    let mut store = store_with(&["news"]);
    let ours = names::enrollment_membership("newsletter", "alice");
    store.apply_membership(&existing_membership(&ours, "alice", "news"));
    let replay = leader(client, store, vec![contact("alice", NEW, &[])]);
    assert_eq!(replay.reconcile(&newsletter).await.unwrap(), settled());
    script.await.unwrap();
}

#[tokio::test]
async fn webhook_denials_count_as_done() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "duplicate and opt-out denials",
        vec![
            create_membership("newsletter", "alice", "news").deny(
                422,
                "Invalid",
                "alice is already a member of news",
                &["FieldValueDuplicate"],
            ),
            record("newsletter", "alice", "already-member"),
            create_membership("newsletter", "bob", "news").deny(
                422,
                "Invalid",
                "bob opted out of news",
                &["FieldValueForbidden"],
            ),
            record("newsletter", "bob", "opted-out"),
            skipped_event("newsletter", "bob", "news"),
            active("newsletter", "news", (0, 1)),
        ],
    );
    let contacts = vec![contact("alice", NEW, &[]), contact("bob", NEW, &[])];
    let h = leader(client, store_with(&["news"]), contacts);
    let result = h.reconcile(&policy("newsletter", "news", false)).await;
    assert_eq!(result.unwrap(), settled());
    script.await.unwrap();
    assert_eq!(
        (h.enrollments("newsletter"), h.opt_out_skips("newsletter")),
        (0, 1)
    );
}

#[tokio::test]
async fn other_failures_back_off_and_leave_the_create_to_retry() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "create fails",
        vec![create_membership("newsletter", "alice", "news").fail(
            500,
            "InternalError",
            "try again",
        )],
    );
    let h = leader(
        client,
        store_with(&["news"]),
        vec![contact("alice", NEW, &[])],
    );
    let error = h
        .reconcile(&policy("newsletter", "news", false))
        .await
        .unwrap_err();
    assert_eq!(error.metric_label(), "api");
    script.await.unwrap();
    assert_eq!(h.enrollments("newsletter"), 0);
}

#[tokio::test]
async fn a_refused_contact_does_not_hold_up_the_others() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "one contact refused",
        vec![
            create_membership("newsletter", "alice", "news").deny(
                422,
                "Invalid",
                "something else is wrong with alice",
                &["FieldValueInvalid"],
            ),
            create_membership("newsletter", "bob", "news"),
            enrolled_event("newsletter", "bob", "news"),
            active("newsletter", "news", (1, 0)),
        ],
    );
    let contacts = vec![contact("alice", NEW, &[]), contact("bob", NEW, &[])];
    let h = leader(client, store_with(&["news"]), contacts);
    let error = h
        .reconcile(&policy("newsletter", "news", false))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Kube(kube::Error::Api(ref s)) if s.code == 422),
        "the pass fails at the end, so it is retried with backoff: {error}"
    );
    script.await.unwrap();
    assert_eq!(h.enrollments("newsletter"), 1);
}

#[tokio::test]
async fn leader_handover_makes_no_duplicate() {
    let signup = policy("signup", "everyone", false);
    let copy = policy("signup-copy", "everyone", false);
    // The old leader enrolls through the first policy, then loses the lease.
    let (client, server) = mock_api::client();
    let script = server.run(
        "old leader",
        vec![
            create_membership("signup", "alice", "everyone"),
            enrolled_event("signup", "alice", "everyone"),
            active("signup", "everyone", (1, 0)),
        ],
    );
    let old = leader(
        client,
        store_with(&["everyone"]),
        vec![contact("alice", NEW, &[])],
    );
    assert_eq!(old.reconcile(&signup).await.unwrap(), settled());
    script.await.unwrap();

    // The new leader starts with nothing in memory and fresh lists: the record, the membership
    // and the status the old leader wrote. The first policy has nothing to do; the second sees
    // the membership and only records it.
    let (client, server) = mock_api::client();
    let script = server.run(
        "new leader",
        vec![
            record("signup-copy", "alice", "already-member"),
            active("signup-copy", "everyone", (0, 0)),
        ],
    );
    let mut store = store_with(&["everyone"]);
    let ours = names::enrollment_membership("signup", "alice");
    store.apply_membership(&existing_membership(&ours, "alice", "everyone"));
    let new = leader(
        client,
        store,
        vec![contact("alice", NEW, &[("signup", "enrolled")])],
    );
    let signup = with_status(signup, 1, 0);
    assert_eq!(new.reconcile(&signup).await.unwrap(), settled());
    assert_eq!(new.reconcile(&copy).await.unwrap(), settled());
    let seen = script.await.unwrap();
    assert!(
        seen.iter()
            .all(|s| s.method != http::Method::POST || s.path == EVENTS)
    );
    assert_eq!(
        (new.enrollments("signup"), new.enrollments("signup-copy")),
        (0, 0)
    );
}

/// The wiring of [`enrollment::run`]: it lists and watches nothing of its own; the start-up
/// sweep finds the policy in the view and its first pass enrolls the contact the view holds.
/// Writes are echoed; any read fails the test.
#[tokio::test]
async fn run_reads_the_view_then_enrolls() {
    use http::{Method, Request, Response};
    use kube::client::Body;

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (writes_tx, mut writes) = tokio::sync::mpsc::unbounded_channel();
    let responder = tokio::spawn(async move {
        let mut watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let query = parts.uri.query().unwrap_or_default().to_owned();
            if query.contains("watch=true") {
                watches.push(send);
                continue;
            }
            let path = parts.uri.path().to_owned();
            let body: Value =
                serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap_or(Value::Null);
            let (code, answer) = match (&parts.method, path.as_str()) {
                (&Method::PATCH, p) if p.ends_with("/status") => (
                    200,
                    serde_json::to_value(policy("newsletter", "news", false)).unwrap(),
                ),
                (&Method::PATCH, _) => (
                    200,
                    serde_json::to_value(contact("alice", NEW, &[])).unwrap(),
                ),
                (&Method::POST, _) => (201, body.clone()),
                (method, p) => panic!("unexpected {method} {p}"),
            };
            if parts.method != Method::GET {
                writes_tx.send((parts.method.clone(), path, body)).unwrap();
            }
            send.send_response(mock_api::json_response(code, &answer));
        }
        drop(watches);
    });
    let mut store = store_with(&["news"]);
    store.apply_contact(&contact("alice", NEW, &[]));
    store.apply_policy(&policy("newsletter", "news", false));
    let view = Arc::new(ClusterView::offline(store));
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        client,
        view,
        metrics.clone(),
        ControllerSettings::default(),
        None,
    ));
    let controller = tokio::spawn(enrollment::run(ctx));
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(_, path, _): &(Method, String, Value)| path.ends_with("/status"))
    {
        let write = tokio::time::timeout(Duration::from_secs(10), writes.recv())
            .await
            .expect("a pass within 10s")
            .unwrap();
        seen.push(write);
    }
    controller.abort();
    let steps: Vec<_> = seen.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    assert_eq!(
        steps,
        [
            format!("POST {API}/namespaces/{NS}/contactgroupmemberships"),
            format!("POST {EVENTS}"),
            format!("PATCH {API}/contactgroupenrollmentpolicies/newsletter/status"),
        ]
    );
    assert_eq!(seen[2].2["status"]["contactsEnrolled"], 1);
    let labels = PolicyLabels {
        policy: "newsletter".into(),
    };
    assert_eq!(
        metrics.controllers.enrollments.get_or_create(&labels).get(),
        1
    );
    responder.abort();
}
