//! The membership controllers on a real API server: (c) enrollment by policy, with and without
//! backfill, (d) an opt-out removal deleting the membership, (e) signup Contacts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::objects::{self, condition_true, create, eventually, get, list};
use crate::harness::{CrdSet, Env, EnvOptions, SYSTEM_NAMESPACE};

use super::{contact, group, membership, removal, start, user};

const WAIT: Duration = Duration::from_secs(30);

fn policy(name: &str, group: (&str, &str), backfill: bool) -> Value {
    let mut p = json!({"apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "ContactGroupEnrollmentPolicy", "metadata": {"name": name},
        "spec": {"contactGroupRef": {"namespace": group.0, "name": group.1},
                 "trigger": {"type": "ContactCreated"}}});
    if backfill {
        p["spec"]["backfill"] = json!(true);
    }
    p
}

/// Memberships of `contact` (namespace, name) in `group`, wherever they live.
async fn memberships_of(env: &Env, contact: (&str, &str), group: (&str, &str)) -> Vec<Value> {
    list(&env.client, "ContactGroupMembership", None)
        .await
        .into_iter()
        .filter(|m| {
            let s = &m["spec"];
            s["contactRef"]["namespace"] == contact.0
                && s["contactRef"]["name"] == contact.1
                && s["contactGroupRef"]["namespace"] == group.0
                && s["contactGroupRef"]["name"] == group.1
        })
        .collect()
}

async fn enrolled(env: &Env, contact: (&str, &str), group: (&str, &str)) {
    eventually(
        &format!("{contact:?} enrolled in {group:?}"),
        WAIT,
        || async {
            match memberships_of(env, contact, group).await.len() {
                1 => Ok(()),
                n => Err(format!("{n} memberships")),
            }
        },
    )
    .await;
}

/// A policy enrolls contacts created after it (once each); without backfill it leaves the
/// contacts that existed before alone, with backfill (our CRDs only: Milo's has no
/// `spec.backfill`) it enrolls them too.
pub async fn enrollment(crds: CrdSet) {
    let env = start(crds, EnvOptions::default()).await;
    let c = &env.client;
    create(c, &group("groups", "news", "public")).await;
    create(c, &group("groups", "digest", "public")).await;
    create(c, &contact("people", "old", "old@example.com")).await;
    // creationTimestamp has one-second resolution: keep "before the policy" unambiguous.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create(c, &policy("welcome", ("groups", "news"), false)).await;
    if crds == CrdSet::Ours {
        eventually("policy welcome Ready", WAIT, || async {
            let p = get(c, "ContactGroupEnrollmentPolicy", None, "welcome").await;
            let p = p.expect("the policy exists");
            if condition_true(&p, "Ready") {
                Ok(())
            } else {
                Err(p["status"].to_string())
            }
        })
        .await;
    }
    create(c, &contact("people", "new", "new@example.com")).await;
    enrolled(&env, ("people", "new"), ("groups", "news")).await;
    let m = &memberships_of(&env, ("people", "new"), ("groups", "news")).await[0];
    assert_eq!(
        m["metadata"]["namespace"], "people",
        "in the contact's namespace"
    );
    left_and_not_brought_back(&env, m).await;

    if crds == CrdSet::Ours {
        create(c, &policy("everyone", ("groups", "digest"), true)).await;
        enrolled(&env, ("people", "old"), ("groups", "digest")).await;
        enrolled(&env, ("people", "new"), ("groups", "digest")).await;
        enrolled(&env, ("people", "later"), ("groups", "digest")).await;
        eventually("policy counters", WAIT, || async {
            let welcome = get(c, "ContactGroupEnrollmentPolicy", None, "welcome").await;
            let everyone = get(c, "ContactGroupEnrollmentPolicy", None, "everyone").await;
            let (welcome, everyone) = (welcome.unwrap(), everyone.unwrap());
            let counts = (
                welcome["status"]["contactsEnrolled"].as_i64(),
                everyone["status"]["contactsEnrolled"].as_i64(),
            );
            // welcome: new (left since, recorded) and later; everyone: old, new and later.
            if counts == (Some(2), Some(3)) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        })
        .await;
    }
    // Settled: still exactly one membership per pair, and the contact that predates the
    // policy without backfill was never enrolled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        memberships_of(&env, ("people", "old"), ("groups", "news"))
            .await
            .is_empty(),
        "a contact older than a policy without backfill was enrolled"
    );
    assert_eq!(
        memberships_of(&env, ("people", "later"), ("groups", "news"))
            .await
            .len(),
        1
    );
    env.assert_server_writes_clean();
}

/// The policy's membership holds the enrollment finalizer and is the only write that enrolled
/// the contact. Deleted by hand (the person left), it goes only once the contact carries the
/// policy's record, and a later pass does not bring the person back.
async fn left_and_not_brought_back(env: &Env, m: &Value) {
    let c = &env.client;
    let finalizers = m["metadata"]["finalizers"].as_array().cloned();
    assert_eq!(
        finalizers.unwrap_or_default(),
        [json!("enrollment.notification.miloapis.com/record")],
        "the membership holds the enrollment finalizer"
    );
    let new = get(c, "Contact", Some("people"), "new").await.unwrap();
    let record = "policy.enrollment.notification.miloapis.com/welcome";
    assert!(
        new["metadata"]["annotations"][record].is_null(),
        "no record written beside the membership: one write enrolls"
    );
    let name = m["metadata"]["name"].as_str().unwrap();
    objects::delete(c, "ContactGroupMembership", Some("people"), name).await;
    let policy = get(c, "ContactGroupEnrollmentPolicy", None, "welcome").await;
    let uid = policy.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(
        "the membership gone, its contact recorded",
        WAIT,
        || async {
            let gone = memberships_of(env, ("people", "new"), ("groups", "news"))
                .await
                .is_empty();
            let new = get(c, "Contact", Some("people"), "new").await.unwrap();
            let value = new["metadata"]["annotations"][record].clone();
            match (gone, value.as_str()) {
                (true, Some(v)) if v == format!("enrolled/{uid}") => Ok(()),
                (gone, v) if gone && v.is_none() => {
                    panic!("the membership went before its contact was recorded")
                }
                (gone, v) => Err(format!("gone {gone}, record {v:?}")),
            }
        },
    )
    .await;
    // Any contact change wakes the policy: a new contact makes it pass again.
    create(c, &contact("people", "later", "later@example.com")).await;
    enrolled(env, ("people", "later"), ("groups", "news")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        memberships_of(env, ("people", "new"), ("groups", "news"))
            .await
            .is_empty(),
        "a person who left was enrolled again"
    );
}

/// A ContactGroupMembershipRemoval (an opt-out) deletes the pair's membership and stays.
pub async fn removal_deletes_membership(crds: CrdSet) {
    let env = start(crds, EnvOptions::default()).await;
    let c = &env.client;
    create(c, &group("groups", "news", "public")).await;
    create(c, &contact("people", "ada", "ada@example.com")).await;
    create(c, &contact("people", "bob", "bob@example.com")).await;
    create(
        c,
        &membership("ada-news", ("people", "ada"), ("groups", "news")),
    )
    .await;
    create(
        c,
        &membership("bob-news", ("people", "bob"), ("groups", "news")),
    )
    .await;
    create(
        c,
        &removal("ada-opt-out", ("people", "ada"), ("groups", "news")),
    )
    .await;
    eventually("ada's membership deleted", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "ada-news").await {
            None => Ok(()),
            Some(m) => Err(m["metadata"].to_string()),
        }
    })
    .await;
    if crds == CrdSet::Ours {
        eventually("the removal Ready", WAIT, || async {
            let r = get(
                c,
                "ContactGroupMembershipRemoval",
                Some("people"),
                "ada-opt-out",
            )
            .await
            .expect("the removal stays");
            if condition_true(&r, "Ready") {
                Ok(())
            } else {
                Err(r["status"].to_string())
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        get(
            c,
            "ContactGroupMembershipRemoval",
            Some("people"),
            "ada-opt-out"
        )
        .await
        .is_some(),
        "the removal stays"
    );
    assert!(
        get(c, "ContactGroupMembership", Some("people"), "bob-news")
            .await
            .is_some(),
        "another contact's membership is untouched"
    );
    env.assert_server_writes_clean();
}

/// Every User gets exactly one Contact: a new one (`user-<name>` in the system namespace,
/// subject and ownerReference to the User), or an existing unlinked Contact with its email,
/// adopted; a changed User email follows to its Contact.
pub async fn signup_contacts(crds: CrdSet) {
    let env = Env::start(crds, EnvOptions::default()).await;
    let c = &env.client;
    env.namespace("people").await;
    let u = create(c, &user("u-1", "una@example.com")).await;
    let contact_of_u1 = eventually("user-u-1 created", WAIT, || async {
        get(c, "Contact", Some(SYSTEM_NAMESPACE), "user-u-1")
            .await
            .ok_or_else(|| "no Contact yet".to_owned())
    })
    .await;
    assert_eq!(contact_of_u1["spec"]["email"], "una@example.com");
    assert_eq!(contact_of_u1["spec"]["subject"]["name"], "u-1");
    assert_eq!(contact_of_u1["spec"]["subject"]["kind"], "User");
    let owners = contact_of_u1["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o["kind"] == "User" && o["uid"] == u["metadata"]["uid"]),
        "{owners:?}"
    );

    // An unlinked Contact with the User's email (another case) is adopted, not duplicated.
    create(c, &contact("people", "pre", "Vic@Example.com")).await;
    create(c, &user("u-2", "vic@example.com")).await;
    eventually("pre adopted by u-2", WAIT, || async {
        let pre = get(c, "Contact", Some("people"), "pre").await.unwrap();
        if pre["spec"]["subject"]["name"] == "u-2" {
            Ok(())
        } else {
            Err(pre["spec"].to_string())
        }
    })
    .await;

    // The User's email changes: its Contact follows.
    objects::merge_patch(
        c,
        "User",
        None,
        "u-1",
        &json!({"spec": {"email": "una.new@example.com"}}),
    )
    .await
    .expect("patch the user");
    eventually("user-u-1 email follows", WAIT, || async {
        let contact = get(c, "Contact", Some(SYSTEM_NAMESPACE), "user-u-1")
            .await
            .unwrap();
        if contact["spec"]["email"] == "una.new@example.com" {
            Ok(())
        } else {
            Err(contact["spec"].to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let contacts = list(c, "Contact", None).await;
    let linked = |user: &str| {
        contacts
            .iter()
            .filter(|c| c["spec"]["subject"]["name"] == user)
            .count()
    };
    assert_eq!(
        (linked("u-1"), linked("u-2")),
        (1, 1),
        "one Contact per User"
    );
    assert!(
        get(c, "Contact", Some(SYSTEM_NAMESPACE), "user-u-2")
            .await
            .is_none(),
        "no Contact created for a User whose Contact was adopted"
    );
    env.assert_server_writes_clean();
}

/// Signing up is enough to be enrolled: a new User gets its Contact (usercontact), and a policy
/// selecting contacts whose subject is a User enrolls it; a contact without a subject is left
/// out by that selector.
pub async fn signup_enrollment(crds: CrdSet) {
    let env = start(crds, EnvOptions::default()).await;
    let c = &env.client;
    create(c, &group("groups", "welcome", "public")).await;
    let mut users_only = policy("new-users", ("groups", "welcome"), false);
    users_only["spec"]["contactSelector"] = json!({"subjectKind": "User"});
    create(c, &users_only).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create(c, &user("u-9", "nine@example.com")).await;
    create(c, &contact("people", "plain", "plain@example.com")).await;
    enrolled(&env, (SYSTEM_NAMESPACE, "user-u-9"), ("groups", "welcome")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        memberships_of(&env, ("people", "plain"), ("groups", "welcome"))
            .await
            .is_empty(),
        "a contact without a User subject was enrolled by a User-only policy"
    );
    env.assert_server_writes_clean();
}
