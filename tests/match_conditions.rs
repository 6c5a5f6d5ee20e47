//! The webhooks' `matchConditions`, evaluated by a CEL engine with the API server's variables:
//! each must evaluate without error on every request (an error rejects the request under
//! `failurePolicy: Fail`), and a request a condition excludes must be one the rule allows
//! unchanged, so skipping the call never changes the outcome. The envtest tier checks the same
//! expressions on the real API server.

mod support;

use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use kube::core::cel::{VapEvaluator, VapExpression};
use milo_webhook::admission::registry::{WEBHOOKS, Webhook, by_path};
use milo_webhook::admission::review::parse_review_value;
use milo_webhook::admission::{Verdict, decide};
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};
use support::fixtures;

/// Whether the API server would call `webhook` for `review`; panics on an evaluation error.
fn called(webhook: &Webhook, review: &Value) -> bool {
    let parsed: AdmissionReview<DynamicObject> =
        serde_json::from_value(review.clone()).expect("an AdmissionReview");
    let request = parsed.request.expect("a request");
    let evaluator = VapEvaluator::builder()
        .object(review["request"]["object"].clone())
        .old_object(review["request"]["oldObject"].clone())
        .request(request.to_cel_request())
        .build();
    let expressions: Vec<VapExpression> = webhook
        .match_conditions
        .iter()
        .map(|c| VapExpression {
            expression: c.expression.to_owned(),
            message: None,
            message_expression: None,
        })
        .collect();
    evaluator.evaluate(&expressions).iter().all(|result| {
        let message = result.message.as_deref().unwrap_or_default();
        assert!(
            !message.starts_with("evaluation error") && !message.contains("compile"),
            "{}: {} on {review}",
            webhook.name,
            message
        );
        result.passed
    })
}

/// Asserts the rule allows `review` with neither patch nor warning.
fn allowed_unchanged(webhook: &Webhook, review: Value, store: Store, what: &str) {
    let request = parse_review_value(review).expect("a well-formed review");
    let view = ClusterView::offline(store);
    match decide(webhook, &request, &view, &Default::default()) {
        Verdict::Allow { patch, warnings } => {
            assert!(patch.0.is_empty(), "{what}: skipped, but the rule patches");
            assert!(warnings.is_empty(), "{what}: skipped, but the rule warns");
        }
        Verdict::Deny(denial) => panic!("{what}: skipped, but the rule denies: {denial:?}"),
    }
}

#[test]
fn every_condition_evaluates_on_the_corpus_and_skips_only_unchanged_allows() {
    let mut skipped = 0;
    for fixture in fixtures::all() {
        let Some(webhook) = by_path(&fixture.path) else {
            continue;
        };
        let Some(review) = fixture.review() else {
            continue;
        };
        let served = parse_review_value(review.clone())
            .is_ok_and(|request| webhook.check_serves(&request).is_ok());
        if !served {
            continue;
        }
        if !called(webhook, &review) {
            skipped += 1;
            allowed_unchanged(webhook, review, fixture.store(), &fixture.name);
        }
    }
    assert!(
        skipped >= 3,
        "the corpus exercises skipped requests ({skipped})"
    );
}

fn object(kind: &str, spec: Value, metadata: Value) -> Value {
    let mut meta = json!({"name": "x", "namespace": "people", "uid": "u-x", "generation": 1});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        m.extend(extra.clone());
    }
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": kind, "metadata": meta,
        "spec": spec})
}

fn review(webhook: &Webhook, operation: &str, new: Option<Value>, old: Option<Value>) -> Value {
    let kind = new.as_ref().or(old.as_ref()).unwrap()["kind"].clone();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "r-1", "operation": operation, "name": "x", "namespace": "people",
        "kind": {"group": webhook.group, "version": webhook.version, "kind": kind},
        "resource": {"group": webhook.group, "version": webhook.version, "resource": webhook.resource},
        "userInfo": {"username": "system:serviceaccount:milo-system:milo-webhook"},
        "object": new, "oldObject": old, "dryRun": false}})
}

/// A spec each kind's rule admits on its own (references may be dangling: UPDATE rules only
/// compare specs).
fn sample_spec(resource: &str) -> (&'static str, Value) {
    match resource {
        "contacts" => ("Contact", json!({"email": "a@example.com"})),
        "contactgroups" => (
            "ContactGroup",
            json!({"displayName": "News", "visibility": "public"}),
        ),
        "contactgroupmemberships" => (
            "ContactGroupMembership",
            json!({"contactRef": {"name": "c", "namespace": "people"},
                "contactGroupRef": {"name": "g", "namespace": "groups"}}),
        ),
        "contactgroupmembershipremovals" => (
            "ContactGroupMembershipRemoval",
            json!({"contactRef": {"name": "c", "namespace": "people"},
                "contactGroupRef": {"name": "g", "namespace": "groups"}}),
        ),
        "contactgroupenrollmentpolicies" => (
            "ContactGroupEnrollmentPolicy",
            json!({"contactGroupRef": {"name": "g", "namespace": "groups"},
                "trigger": {"type": "SignUp"}}),
        ),
        "emails" => (
            "Email",
            json!({"recipient": {"emailAddress": "a@example.com"}, "templateRef": {"name": "t"}}),
        ),
        "emailtemplates" => (
            "EmailTemplate",
            json!({"subject": "Hi", "htmlBody": "<p>Hi</p>", "textBody": "Hi"}),
        ),
        "userinvitations" => (
            "UserInvitation",
            json!({"email": "a@example.com", "organizationRef": {"name": "acme"},
                "roles": [{"name": "viewer"}], "state": "Pending"}),
        ),
        other => panic!("no sample spec for {other}; add one"),
    }
}

#[test]
fn metadata_only_updates_are_never_sent_and_spec_changes_always_are() {
    for webhook in WEBHOOKS
        .iter()
        .filter(|w| w.operations.contains(&"UPDATE") && w.resource != "contacts")
    {
        let (kind, spec) = sample_spec(webhook.resource);
        let old = object(kind, spec.clone(), json!({}));
        let new = object(
            kind,
            spec.clone(),
            json!({"finalizers": ["notification.miloapis.com/resend"], "labels": {"a": "b"}}),
        );
        let update = review(webhook, "UPDATE", Some(new.clone()), Some(old.clone()));
        assert!(
            !called(webhook, &update),
            "{}: metadata-only update sent",
            webhook.name
        );
        allowed_unchanged(webhook, update, Store::default(), webhook.name);
        let mut changed = new.clone();
        changed["spec"]["extra"] = json!("changed");
        assert!(
            called(
                webhook,
                &review(webhook, "UPDATE", Some(changed), Some(old))
            ),
            "{}: a spec change must be sent",
            webhook.name
        );
        assert!(called(webhook, &review(webhook, "CREATE", Some(new), None)));
    }
    // A DELETE (removals are registered for it) is always sent: the rule decides ownership.
    let removals = WEBHOOKS
        .iter()
        .find(|w| w.operations.contains(&"DELETE"))
        .unwrap();
    let (kind, spec) = sample_spec(removals.resource);
    let delete = review(
        removals,
        "DELETE",
        None,
        Some(object(kind, spec, json!({}))),
    );
    assert!(called(removals, &delete));
    // An object without a spec is sent (the rule explains the 400), and evaluates without error.
    let bare = json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
        "metadata": {"name": "x", "namespace": "people"}});
    for webhook in WEBHOOKS.iter().filter(|w| w.resource == "contacts") {
        let update = review(webhook, "UPDATE", Some(bare.clone()), Some(bare.clone()));
        let sent = called(webhook, &update);
        assert_eq!(
            sent,
            webhook
                .match_conditions
                .iter()
                .all(|c| c.name != "user-owner-missing"),
            "{}",
            webhook.name
        );
    }
}

#[test]
fn the_contact_mutator_is_sent_only_contacts_without_their_users_ownership() {
    let mutator = WEBHOOKS
        .iter()
        .find(|w| w.resource == "contacts" && w.path.starts_with("/mutate"))
        .unwrap();
    let subject = json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": "alice"});
    let with_subject = json!({"email": "a@example.com", "subject": subject});
    let owner = json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User", "name": "alice",
        "uid": "u-alice"});
    let other_owner =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "alice", "uid": "u-cm"});
    let cases = [
        (
            "no subject",
            json!({"email": "a@example.com"}),
            json!({}),
            false,
        ),
        ("subject, no owners", with_subject.clone(), json!({}), true),
        (
            "subject, another owner",
            with_subject.clone(),
            json!({"ownerReferences": [other_owner]}),
            true,
        ),
        (
            "subject, owned by the User",
            with_subject.clone(),
            json!({"ownerReferences": [other_owner, owner]}),
            false,
        ),
        (
            "subject of another group",
            json!({"email": "a@example.com",
                "subject": {"apiGroup": "example.com", "kind": "User", "name": "alice"}}),
            json!({}),
            false,
        ),
        (
            "subject without a kind",
            json!({"email": "a@example.com",
                "subject": {"apiGroup": "iam.miloapis.com", "name": "alice"}}),
            json!({}),
            false,
        ),
    ];
    let user = json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User",
        "metadata": {"name": "alice", "uid": "u-alice"}, "spec": {"email": "a@example.com"}});
    let mut store = Store::default();
    milo_webhook::view::manifests::apply_object(
        &mut store,
        "iam.miloapis.com/v1alpha1",
        "User",
        user,
    )
    .unwrap();
    for (what, spec, metadata, expected) in cases {
        for operation in ["CREATE", "UPDATE"] {
            let new = object("Contact", spec.clone(), metadata.clone());
            let old = (operation == "UPDATE").then(|| new.clone());
            let request = review(mutator, operation, Some(new), old);
            assert_eq!(called(mutator, &request), expected, "{what} ({operation})");
            if !expected {
                allowed_unchanged(mutator, request, store.clone(), what);
            }
        }
    }
}

#[test]
fn rendering_without_match_conditions_leaves_them_out() {
    use milo_webhook::webhook_config::{Endpoint, RenderOptions, mutating, validating};
    let mut options = RenderOptions {
        name: "milo-webhook".into(),
        endpoint: Endpoint::Url("https://127.0.0.1:9443".into()),
        ca_bundle: None,
        inject_ca_from: None,
        timeout_seconds: 10,
        match_conditions: true,
    };
    let with = validating(&options).webhooks.unwrap();
    for webhook in &with {
        let updates = WEBHOOKS
            .iter()
            .find(|w| w.name == webhook.name)
            .is_some_and(|w| w.operations.contains(&"UPDATE"));
        assert_eq!(
            webhook.match_conditions.is_some(),
            updates,
            "{}",
            webhook.name
        );
    }
    let mutators = mutating(&options).webhooks.unwrap();
    let contact = mutators
        .iter()
        .find(|w| w.name.starts_with("mcontact"))
        .unwrap();
    assert_eq!(contact.match_conditions.as_ref().unwrap().len(), 1);
    options.match_conditions = false;
    assert!(
        validating(&options)
            .webhooks
            .unwrap()
            .iter()
            .all(|w| w.match_conditions.is_none())
    );
    assert!(
        mutating(&options)
            .webhooks
            .unwrap()
            .iter()
            .all(|w| w.match_conditions.is_none())
    );
}
