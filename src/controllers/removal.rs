//! The removal controller: a ContactGroupMembershipRemoval (an opt-out) deletes every membership
//! of its (contact, group) pair, records whose opt-out it is (`status.username`) and reports
//! `Ready`. It is woken again whenever a membership of the pair appears, so a membership created
//! in the instant before the removal, or one that slipped past a webhook whose view lagged, does
//! not survive at rest.
//!
//! A removal whose contact or group is really gone (a view miss confirmed by the API server) is
//! deleted: ownerReferences cannot cross namespaces, and a finalizer could hang the deletion of
//! the contact or group, so this controller does the cleanup itself.

use std::sync::Arc;

use kube::{Api, Resource, ResourceExt};
use serde_json::{Map, Value, json};

use super::conditions::{self, Desired, READY};
use super::referents::{self, Confirmed, Missing};
use super::{Action, Context, ControllerKind, Error, ObjectKey, instrumented, kubeapi, object_key};
use crate::api::{ContactGroupMembership, ContactGroupMembershipRemoval};
use crate::view::{Store, ViewChange, ViewKind};

type Removal = ContactGroupMembershipRemoval;

/// Reason of the `Ready` condition once the pair's memberships are gone.
pub const READY_REASON: &str = "CreateSuccessful";

/// View kinds whose relist wakes every removal: memberships may have appeared, contacts and
/// groups may have been deleted or changed while the view was relisting.
pub const RELISTS: [ViewKind; 3] = [
    ViewKind::Membership,
    ViewKind::Contact,
    ViewKind::ContactGroup,
];

/// The status a removal should carry, when it does not already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusWrite {
    /// `status.username`; `None` leaves the field out of the apply, which clears it.
    pub username: Option<String>,
    /// The `Ready` condition.
    pub ready: Desired<'static>,
}

/// What one reconcile of a removal does, decided from the removal and the view alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Being deleted: nothing to do.
    Skip,
    /// Enforce the opt-out.
    Enforce {
        /// Memberships of the pair to delete, as (namespace, name).
        memberships: Vec<(String, String)>,
        /// Referents the view misses: asked about before the status is written; a gone one
        /// deletes the removal instead.
        missing: Missing,
        /// The status to write, when the referents are in view and it is not already current.
        status: Option<StatusWrite>,
    },
}

/// Decides what reconciling `removal` does, from the view.
pub fn plan(removal: &Removal, store: &Store) -> Plan {
    if removal.metadata.deletion_timestamp.is_some() {
        return Plan::Skip;
    }
    let spec = &removal.spec;
    let memberships = store
        .memberships_of(&spec.contact_ref, &spec.contact_group_ref)
        .iter()
        .map(|m| (m.namespace.to_owned(), m.name.to_owned()))
        .collect();
    let missing = Missing::in_view(store, spec);
    let status = if missing.any() {
        None
    } else {
        let contact = store.contact(&spec.contact_ref.namespace, &spec.contact_ref.name);
        status_write(
            removal,
            contact.as_ref().and_then(referents::username_in_view),
        )
    };
    Plan::Enforce {
        memberships,
        missing,
        status,
    }
}

/// The status `removal` should have given its contact's `username`, or `None` when it already
/// has it (so a healthy removal costs no write).
pub fn status_write(removal: &Removal, username: Option<&str>) -> Option<StatusWrite> {
    let ready = Desired {
        type_: READY,
        status: true,
        reason: READY_REASON,
        message: format!(
            "removed contact {} from group {}",
            referents::show(&removal.spec.contact_ref),
            referents::show(&removal.spec.contact_group_ref)
        ),
    };
    let status = removal.status.as_ref();
    let existing = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let current_username = status.and_then(|s| s.username.as_deref());
    if current_username == username
        && conditions::is_current(existing, &ready, removal.metadata.generation)
    {
        return None;
    }
    Some(StatusWrite {
        username: username.map(str::to_owned),
        ready,
    })
}

/// Whether reconciling `removal` would do anything, from the view alone: memberships of its
/// pair to delete, a referent to confirm, or a status to write.
pub fn needs_work(removal: &Removal, store: &Store) -> bool {
    match plan(removal, store) {
        Plan::Skip => false,
        Plan::Enforce {
            memberships,
            missing,
            status,
        } => !memberships.is_empty() || missing.any() || status.is_some(),
    }
}

/// The removals a change in the view concerns (see [`referents::to_wake`]).
pub fn removals_to_wake(change: &ViewChange, view: &Store) -> Vec<ObjectKey> {
    referents::to_wake::<Removal>(change, view)
}

/// Reconciles one removal (see the module docs). Healthy removals are looked at again after the
/// resync interval.
pub async fn reconcile(removal: Arc<Removal>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(removal.namespace().as_deref(), &removal.name_any());
    instrumented(&ctx, ControllerKind::Removal, key, enforce(&removal, &ctx)).await
}

async fn enforce(removal: &Removal, ctx: &Context) -> Result<Action, Error> {
    let decided = plan(removal, &ctx.view.read());
    let Plan::Enforce {
        memberships,
        missing,
        mut status,
    } = decided
    else {
        return Ok(Action::await_change());
    };
    let namespace = removal
        .namespace()
        .ok_or_else(|| Error::Invalid("removal has no namespace".into()))?;
    let name = removal.name_any();
    let regarding = removal.object_ref(&());

    for (ns, membership) in &memberships {
        let api: Api<ContactGroupMembership> = Api::namespaced(ctx.client.clone(), ns);
        if kubeapi::delete(&api, membership).await? {
            tracing::info!(membership = %object_key(Some(ns), membership), "deleted membership of an opted-out contact");
            let note = format!("deleted ContactGroupMembership {ns}/{membership}");
            ctx.event(&regarding, "MembershipDeleted", "Delete", note)
                .await;
        }
    }

    if missing.any() {
        match referents::confirm(&ctx.client, &removal.spec, missing).await? {
            Confirmed::Gone(referent) => {
                let api: Api<Removal> = Api::namespaced(ctx.client.clone(), &namespace);
                if kubeapi::delete(&api, &name).await? {
                    tracing::info!(%referent, "deleted removal whose {referent} is gone");
                    let note = format!("deleted: its {referent} no longer exists");
                    ctx.event(&regarding, "ReferentGone", "Delete", note).await;
                }
                return Ok(Action::await_change());
            }
            Confirmed::Present { contact } => {
                let from_view;
                let username = match &contact {
                    Some(contact) => referents::username_of(contact),
                    None => {
                        let c = &removal.spec.contact_ref;
                        let view = ctx.view.read();
                        from_view = view
                            .contact(&c.namespace, &c.name)
                            .as_ref()
                            .and_then(referents::username_in_view)
                            .map(str::to_owned);
                        from_view.as_deref()
                    }
                };
                status = status_write(removal, username);
            }
        }
    }

    if let Some(write) = status {
        let existing = removal
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let condition = conditions::render(
            existing,
            &write.ready,
            removal.metadata.generation,
            jiff::Timestamp::now(),
        );
        let mut body = Map::new();
        body.insert("conditions".into(), json!([condition]));
        if let Some(username) = write.username {
            body.insert("username".into(), Value::String(username));
        }
        let api: Api<Removal> = Api::namespaced(ctx.client.clone(), &namespace);
        kubeapi::apply_status(&ctx.schemas, &api, &name, Value::Object(body)).await?;
    }
    Ok(Action::await_change())
}

/// Runs the removal controller until its task is aborted (leadership lost). It starts once
/// the view has synced, so no decision is made on a half-filled view.
pub async fn run(ctx: Arc<Context>) {
    referents::run_pair_controller::<Removal, _, _>(
        ctx,
        ControllerKind::Removal,
        &RELISTS,
        reconcile,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Contact;
    use crate::api::ContactGroup;
    use serde_json::json;

    fn removal(status: Value) -> Removal {
        serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupMembershipRemoval",
            "metadata": {"name": "r", "namespace": "ns", "generation": 1},
            "spec": {
                "contactRef": {"name": "c", "namespace": "ns"},
                "contactGroupRef": {"name": "g", "namespace": "groups"}
            },
            "status": status,
        }))
        .unwrap()
    }

    fn contact(subject: Value) -> Contact {
        serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
            "metadata": {"name": "c", "namespace": "ns"},
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

    fn membership(ns: &str, name: &str, contact: &str) -> ContactGroupMembership {
        serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupMembership",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "contactRef": {"name": contact, "namespace": "ns"},
                "contactGroupRef": {"name": "g", "namespace": "groups"}
            }
        }))
        .unwrap()
    }

    fn user() -> Value {
        json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": "u1"})
    }

    fn ready() -> Value {
        json!({
            "type": "Ready", "status": "True", "reason": "CreateSuccessful",
            "message": "removed contact ns/c from group groups/g",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
        })
    }

    fn full_store() -> Store {
        let mut store = Store::default();
        store.apply_contact(&contact(user()));
        store.apply_group(&group());
        store
    }

    fn roots(objects: Vec<Removal>) -> Vec<Removal> {
        objects
    }

    /// The objects woken, with `roots` (the controller's own objects) in the view too.
    fn removals_to_wake(change: &ViewChange, store: &Store, roots: &[Removal]) -> Vec<ObjectKey> {
        let mut store = store.clone();
        for root in roots {
            store.apply_removal(root);
        }
        super::removals_to_wake(change, &store)
    }

    fn names(refs: Vec<ObjectKey>) -> Vec<String> {
        let mut names: Vec<_> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn plan_deletes_the_pairs_memberships_and_sets_status() {
        let mut store = full_store();
        store.apply_membership(&membership("ns", "m1", "c"));
        store.apply_membership(&membership("other", "m2", "c"));
        store.apply_membership(&membership("ns", "unrelated", "d"));
        let Plan::Enforce {
            mut memberships,
            missing,
            status,
        } = plan(&removal(json!({})), &store)
        else {
            panic!("skipped")
        };
        memberships.sort();
        assert_eq!(
            memberships,
            [("ns".into(), "m1".into()), ("other".into(), "m2".into())]
        );
        assert!(!missing.any());
        let status = status.unwrap();
        assert_eq!(status.username.as_deref(), Some("u1"));
        assert_eq!(status.ready.reason, READY_REASON);
        assert_eq!(
            status.ready.message,
            "removed contact ns/c from group groups/g"
        );
    }

    #[test]
    fn plan_writes_nothing_when_current_and_clears_a_stale_username() {
        let store = full_store();
        let current = removal(json!({"username": "u1", "conditions": [ready()]}));
        assert_eq!(
            plan(&current, &store),
            Plan::Enforce {
                memberships: vec![],
                missing: Missing::default(),
                status: None
            }
        );
        let mut store = Store::default();
        store.apply_contact(&contact(json!({"apiGroup": "resourcemanager.miloapis.com", "kind": "Organization", "name": "o"})));
        store.apply_group(&group());
        let Plan::Enforce { status, .. } = plan(&current, &store) else {
            panic!("skipped")
        };
        assert_eq!(status.unwrap().username, None);
    }

    #[test]
    fn plan_defers_status_while_a_referent_is_missing_and_skips_deleting_objects() {
        let mut store = Store::default();
        store.apply_contact(&contact(user()));
        let Plan::Enforce {
            missing, status, ..
        } = plan(&removal(json!({})), &store)
        else {
            panic!("skipped")
        };
        assert_eq!(
            missing,
            Missing {
                contact: false,
                group: true
            }
        );
        assert_eq!(status, None);
        let mut deleting = removal(json!({}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert_eq!(plan(&deleting, &full_store()), Plan::Skip);
    }

    #[test]
    fn membership_applied_wakes_the_removals_of_its_pair() {
        let mut store = full_store();
        store.apply_membership(&membership("ns", "m1", "c"));
        let mut other = removal(json!({}));
        other.metadata.name = Some("other".into());
        other.spec.contact_ref.name = "d".into();
        // The view holds both removals, as it does in a cluster; the pair index finds the one.
        store.apply_removal(&removal(json!({})));
        store.apply_removal(&other);
        let roots = roots(vec![removal(json!({})), other]);
        let change = ViewChange::Applied(ViewKind::Membership, "ns".into(), "m1".into());
        assert_eq!(names(removals_to_wake(&change, &store, &roots)), ["r"]);
        let unknown = ViewChange::Applied(ViewKind::Membership, "ns".into(), "nope".into());
        assert!(removals_to_wake(&unknown, &store, &roots).is_empty());
    }

    #[test]
    fn contact_applied_wakes_removals_whose_username_is_stale() {
        let store = full_store();
        let change = ViewChange::Applied(ViewKind::Contact, "ns".into(), "c".into());
        let stale = roots(vec![removal(json!({}))]);
        assert_eq!(names(removals_to_wake(&change, &store, &stale)), ["r"]);
        let current = roots(vec![removal(json!({"username": "u1"}))]);
        assert!(removals_to_wake(&change, &store, &current).is_empty());
        let elsewhere = ViewChange::Applied(ViewKind::Contact, "ns".into(), "x".into());
        assert!(removals_to_wake(&elsewhere, &store, &stale).is_empty());
    }

    #[test]
    fn referent_deleted_wakes_removals_naming_it() {
        let store = Store::default();
        let roots = roots(vec![removal(json!({"username": "u1"}))]);
        for change in [
            ViewChange::Deleted(ViewKind::Contact, "ns".into(), "c".into()),
            ViewChange::Deleted(ViewKind::ContactGroup, "groups".into(), "g".into()),
        ] {
            assert_eq!(names(removals_to_wake(&change, &store, &roots)), ["r"]);
        }
        for change in [
            ViewChange::Deleted(ViewKind::ContactGroup, "ns".into(), "g".into()),
            ViewChange::Applied(ViewKind::ContactGroup, "groups".into(), "g".into()),
            ViewChange::Deleted(ViewKind::Membership, "ns".into(), "m1".into()),
            ViewChange::Relisted(ViewKind::Contact),
        ] {
            assert!(
                removals_to_wake(&change, &store, &roots).is_empty(),
                "{change:?}"
            );
        }
    }
}
