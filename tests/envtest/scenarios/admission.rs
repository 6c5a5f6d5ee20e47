//! (a) Admission denials as kubectl receives them, and (b) the mutating webhook's patch as the API
//! server stores it (and the garbage collector acts on it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::harness::objects::{self, create, eventually, get, refused_create};
use crate::harness::{CrdSet, Env, EnvOptions, ServerOptions};

use super::{contact, group, membership, removal, start, user, user_contact};

fn assert_invalid(status: &kube::core::Status, words: &str, field: &str) {
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(status.reason, "Invalid", "{status:?}");
    assert!(
        status.message.contains("denied the request") && status.message.contains(words),
        "message {:?} lacks {words:?}",
        status.message
    );
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.field == field && c.message.contains(words)),
        "no cause on {field} saying {words:?}: {causes:?}"
    );
}

/// A membership for a contact who opted out, a removal for a private group and a duplicate
/// email are refused with a 422 Invalid naming the rule and the field; nothing is stored. A
/// duplicate held in another namespace is refused without naming its holder.
pub async fn denials(crds: CrdSet) {
    let env = start(crds, EnvOptions::default()).await;
    let c = &env.client;
    create(c, &group("groups", "news", "public")).await;
    create(c, &group("groups", "staff", "private")).await;
    create(c, &contact("people", "ada", "ada@example.com")).await;
    create(
        c,
        &removal("ada-news-removal", ("people", "ada"), ("groups", "news")),
    )
    .await;

    let status = refused_create(
        c,
        &membership("ada-news", ("people", "ada"), ("groups", "news")),
    )
    .await;
    assert_invalid(
        &status,
        "cannot create membership as a ContactGroupMembershipRemoval ada-news-removal already exists",
        "spec",
    );
    assert!(
        objects::get(c, "ContactGroupMembership", Some("people"), "ada-news")
            .await
            .is_none(),
        "a denied membership was stored"
    );

    let status = refused_create(
        c,
        &removal("ada-staff-removal", ("people", "ada"), ("groups", "staff")),
    )
    .await;
    assert_invalid(
        &status,
        "ContactGroup must be public for creating a ContactGroupMembershipRemoval",
        "spec.contactGroupRef.name",
    );

    // Case-insensitively the same address as ada's.
    let status = refused_create(c, &contact("people", "ada2", "ADA@Example.com")).await;
    assert_invalid(
        &status,
        "a Contact named ada already has this email in the cluster",
        "spec.email",
    );
    // From another namespace the address is still taken, but who holds it is not said.
    let status = refused_create(c, &contact("groups", "ada3", "ada@example.com")).await;
    assert_invalid(
        &status,
        "a Contact in another namespace already has this email in the cluster",
        "spec.email",
    );
    let said = format!("{status:?}");
    assert!(
        !said.contains("people") && !said.contains("named ada"),
        "{said}"
    );
    // And what is allowed is allowed: a membership in the private group.
    create(
        c,
        &membership("ada-staff", ("people", "ada"), ("groups", "staff")),
    )
    .await;
    // Its spec cannot change (the CRD's CEL rule, which only the API server evaluates, and the
    // webhook agree).
    let moved = objects::merge_patch(
        c,
        "ContactGroupMembership",
        Some("people"),
        "ada-staff",
        &serde_json::json!({"spec": {"contactGroupRef": {"name": "news"}}}),
    )
    .await;
    match moved {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("spec is immutable"), "{status:?}");
        }
        other => panic!("a membership's group was changed: {other:?}"),
    }
    env.assert_server_writes_clean();
}

/// A Contact whose subject is a User is stored with a (non-controller) ownerReference to that
/// User, patched in by the mutating webhook; deleting the User garbage-collects the Contact.
pub async fn owner_reference(crds: CrdSet) {
    // No usercontact controller: it would race the test to give the User a Contact of its own.
    let options = EnvOptions {
        controller_manager: true,
        server: ServerOptions {
            controllers: Some("enrollment,removal,membership".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let env = Env::start(crds, options).await;
    let c = &env.client;
    env.namespace("people").await;
    let u = create(c, &user("u-1001", "grace@example.com")).await;
    create(
        c,
        &user_contact("people", "grace", "grace@example.com", "u-1001"),
    )
    .await;
    let stored = get(c, "Contact", Some("people"), "grace")
        .await
        .expect("the Contact is stored");
    let owners = stored["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!(owner["apiVersion"], "iam.miloapis.com/v1alpha1");
    assert_eq!(owner["kind"], "User");
    assert_eq!(owner["name"], "u-1001");
    assert_eq!(owner["uid"], u["metadata"]["uid"]);
    assert_ne!(owner["controller"], true, "not a controller reference");

    // A subject that does not exist: the mutating webhook leaves it to the validator's 404.
    let status = refused_create(
        c,
        &user_contact("people", "nobody", "nobody@example.com", "u-404"),
    )
    .await;
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.field == "spec.subject.name")),
        "{status:?}"
    );

    objects::delete(c, "User", None, "u-1001").await;
    eventually(
        "the Contact garbage-collected with its User",
        Duration::from_secs(60),
        || async {
            match get(c, "Contact", Some("people"), "grace").await {
                None => Ok(()),
                Some(c) => Err(format!("still there: {}", c["metadata"])),
            }
        },
    )
    .await;
    env.assert_server_writes_clean();
}

/// The API server calls a webhook only when the call can change the outcome (`matchConditions`):
/// never for metadata-only updates, and the contact mutator only for a Contact whose User does
/// not own it yet. Counted by the API server's own metrics.
pub async fn webhook_calls(crds: CrdSet) {
    let options = EnvOptions {
        server: ServerOptions {
            controllers: Some("removal,membership".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let env = start(crds, options).await;
    let c = &env.client;
    create(c, &user("u-1", "grace@example.com")).await;
    create(c, &group("groups", "news", "public")).await;
    let (mutator, validator) = (
        "mcontact.notification.miloapis.com",
        "vcontact.notification.miloapis.com",
    );
    let calls = |before: &BTreeMap<(String, String), u64>,
                 after: &BTreeMap<(String, String), u64>,
                 name: &str,
                 operation: &str| {
        let key = (name.to_owned(), operation.to_owned());
        after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
    };

    // A Contact without a subject: validated (the email must be unique), never mutated.
    let before = env.webhook_calls().await;
    create(c, &contact("people", "ada", "ada@example.com")).await;
    let after = env.webhook_calls().await;
    assert_eq!(calls(&before, &after, validator, "CREATE"), 1);
    assert_eq!(calls(&before, &after, mutator, "CREATE"), 0);

    // A Contact of a User: mutated (the owner is added) and validated.
    let before = after;
    create(
        c,
        &user_contact("people", "grace", "grace@example.com", "u-1"),
    )
    .await;
    let after = env.webhook_calls().await;
    assert_eq!(calls(&before, &after, mutator, "CREATE"), 1);
    assert_eq!(calls(&before, &after, validator, "CREATE"), 1);

    // A Contact that names its User as owner already (as signup's do): validated only.
    let before = after;
    let mut lin = user_contact("people", "lin", "lin@example.com", "u-2");
    let u2 = create(c, &user("u-2", "lin@example.com")).await;
    lin["metadata"]["ownerReferences"] = json!([{"apiVersion": "iam.miloapis.com/v1alpha1",
        "kind": "User", "name": "u-2", "uid": u2["metadata"]["uid"]}]);
    create(c, &lin).await;
    let after = env.webhook_calls().await;
    assert_eq!(calls(&before, &after, mutator, "CREATE"), 0);
    assert_eq!(calls(&before, &after, validator, "CREATE"), 1);

    // Metadata-only updates (labels, annotations, finalizers) reach no webhook.
    let before = after;
    let metadata = json!({"metadata": {"labels": {"team": "a"},
        "annotations": {"example.com/note": "x"}}});
    for (kind, namespace, name) in [
        ("Contact", Some("people"), "ada"),
        ("Contact", Some("people"), "grace"),
        ("ContactGroup", Some("groups"), "news"),
    ] {
        objects::merge_patch(c, kind, namespace, name, &metadata)
            .await
            .unwrap_or_else(|e| panic!("label {kind} {name}: {e}"));
    }
    let after = env.webhook_calls().await;
    let updates: u64 = after
        .iter()
        .filter(|((_, op), _)| op == "UPDATE")
        .map(|((name, op), _)| calls(&before, &after, name, op))
        .sum();
    assert_eq!(updates, 0, "metadata-only updates were sent: {after:?}");

    // A spec change is validated; the mutator is not called for a Contact its User owns.
    let before = after;
    objects::merge_patch(
        c,
        "Contact",
        Some("people"),
        "grace",
        &json!({"spec": {"givenName": "Grace"}}),
    )
    .await
    .expect("change grace's given name");
    let after = env.webhook_calls().await;
    assert_eq!(calls(&before, &after, validator, "UPDATE"), 1);
    assert_eq!(calls(&before, &after, mutator, "UPDATE"), 0);
    env.assert_server_writes_clean();
}
