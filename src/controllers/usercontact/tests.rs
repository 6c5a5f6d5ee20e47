//! The pure half of the usercontact controller: plans, patches and wake-ups.

use super::*;
use crate::api::iam::UserSpec;

fn user(name: &str, email: &str) -> User {
    let mut user = User::new(
        name,
        UserSpec {
            email: email.into(),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
        },
    );
    user.metadata.uid = Some(format!("uid-{name}"));
    user
}

fn contact(ns: &str, name: &str, email: &str, subject: Option<&str>) -> Contact {
    let mut contact = Contact::new(
        name,
        ContactSpec {
            email: email.into(),
            subject: subject.map(|user| SubjectRef {
                api_group: IAM_GROUP.into(),
                kind: "User".into(),
                name: user.into(),
                namespace: None,
            }),
            ..ContactSpec::default()
        },
    );
    contact.metadata.namespace = Some(ns.into());
    contact
}

fn key(ns: &str, name: &str) -> ContactKey {
    ContactKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn store(users: &[&User], contacts: &[Contact]) -> Store {
    let mut store = Store::default();
    users.iter().for_each(|u| store.apply_user(u));
    contacts.iter().for_each(|c| store.apply_contact(c));
    store
}

#[test]
fn a_user_without_contacts_gets_its_own() {
    let alice = user("alice", "alice@example.com");
    let plan = plan(&alice, &store(&[&alice], &[]), "milo-system");
    assert_eq!(
        plan,
        Plan::Create {
            contact: key("milo-system", "user-alice")
        }
    );
}

#[test]
fn the_own_contact_is_preferred_and_duplicates_reported() {
    let alice = user("alice", "alice@example.com");
    let contacts = [
        contact("a", "zzz", "x@example.com", Some("alice")),
        contact(
            "milo-system",
            "user-alice",
            "alice@example.com",
            Some("alice"),
        ),
        contact("a", "aaa", "y@example.com", Some("alice")),
    ];
    let plan = plan(&alice, &store(&[&alice], &contacts), "milo-system");
    assert_eq!(
        plan,
        Plan::Sync {
            contact: key("milo-system", "user-alice"),
            duplicates: vec![key("a", "aaa"), key("a", "zzz")],
        }
    );
    let others = [contacts[0].clone(), contacts[2].clone()];
    let plan = super::plan(&alice, &store(&[&alice], &others), "milo-system");
    assert!(matches!(plan, Plan::Sync { contact, .. } if contact == key("a", "aaa")));
}

#[test]
fn an_unlinked_contact_with_the_email_is_adopted_whatever_the_case() {
    let alice = user("alice", "Alice@Example.com");
    let contacts = [
        contact("b", "c2", "alice@example.COM", None),
        contact("a", "c9", "ALICE@example.com", None),
    ];
    let plan = plan(&alice, &store(&[&alice], &contacts), "milo-system");
    assert_eq!(
        plan,
        Plan::Adopt {
            contact: key("a", "c9")
        }
    );
}

#[test]
fn an_email_held_by_someone_elses_contact_is_a_conflict() {
    let alice = user("alice", "shared@example.com");
    let bob = user("bob", "shared@example.com");
    let contacts = [contact("x", "bobs", "shared@example.com", Some("bob"))];
    let plan = plan(&alice, &store(&[&alice, &bob], &contacts), "ns");
    assert_eq!(
        plan,
        Plan::Conflict {
            contact: key("x", "bobs")
        }
    );
}

#[test]
fn sync_patches_only_what_differs_and_never_the_subject() {
    let mut alice = user("alice", "alice@example.com");
    let mut spec = desired(&alice, &key("ns", "user-alice")).spec;
    assert_eq!(sync_patch(&alice, &spec), None);
    spec.given_name = Some(String::new());
    alice.spec.given_name = None;
    assert_eq!(sync_patch(&alice, &spec), None, "empty counts as none");
    alice.spec.email = "new@example.com".into();
    alice.spec.family_name = None;
    assert_eq!(
        sync_patch(&alice, &spec),
        Some(json!({"spec": {"email": "new@example.com", "familyName": null}}))
    );
}

#[test]
fn changes_wake_the_users_they_concern() {
    let alice = user("alice", "alice@example.com");
    let carol = user("carol", "Carol@example.com");
    let contacts = [
        contact("ns", "linked", "a@example.com", Some("alice")),
        contact("ns", "loose", "carol@EXAMPLE.com", None),
    ];
    let store = store(&[&alice, &carol], &contacts);
    let wake = |change: ViewChange| -> Vec<String> {
        users_to_wake(&change, &store, "ns")
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    let applied = |kind, ns: &str, name: &str| ViewChange::Applied(kind, ns.into(), name.into());
    let deleted = |kind, ns: &str, name: &str| ViewChange::Deleted(kind, ns.into(), name.into());
    assert_eq!(wake(applied(ViewKind::User, "", "alice")), ["alice"]);
    assert!(
        wake(applied(ViewKind::User, "", "bob")).is_empty(),
        "not in the view"
    );
    assert_eq!(wake(applied(ViewKind::Contact, "ns", "linked")), ["alice"]);
    assert_eq!(wake(applied(ViewKind::Contact, "ns", "loose")), ["carol"]);
    assert!(wake(applied(ViewKind::Contact, "ns", "gone")).is_empty());
    assert_eq!(
        wake(deleted(ViewKind::Contact, "ns", "user-alice")),
        ["alice"]
    );
    assert!(wake(deleted(ViewKind::Contact, "ns", "user-nobody")).is_empty());
    assert!(wake(deleted(ViewKind::Contact, "ns", "linked")).is_empty());
    assert!(wake(deleted(ViewKind::User, "", "alice")).is_empty());
    assert!(wake(applied(ViewKind::ContactGroup, "ns", "g")).is_empty());
    assert!(wake(ViewChange::Relisted(ViewKind::User)).is_empty());
}
