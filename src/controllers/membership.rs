//! The membership controller: keeps `status.username` of every ContactGroupMembership equal to
//! the User its contact belongs to, deletes memberships whose contact or group is really gone,
//! and deletes a membership that coexists with a removal (opt-out) of the same pair, the at-rest
//! half of the guarantee the admission webhook gives at creation time. As a membership an
//! enrollment policy created goes, it writes the policy's record on the contact and then lets
//! it go (see [`super::enrollment`]).
//!
//! Its only status write is a JSON merge patch of `status.username`: conditions belong to the
//! provider sync and are never sent.

use std::sync::Arc;

use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use super::referents::{self, Confirmed, Missing};
use super::{
    Action, Context, ControllerKind, Error, ObjectKey, enrollment, instrumented, kubeapi,
    object_key,
};
use crate::api::{Contact, ContactGroupMembership, ContactGroupMembershipRemoval};
use crate::view::{Store, ViewChange, ViewKind};

type Membership = ContactGroupMembership;

/// View kinds whose relist wakes every membership: removals may have appeared, contacts and
/// groups may have been deleted or changed while the view was relisting.
pub const RELISTS: [ViewKind; 3] = [ViewKind::Removal, ViewKind::Contact, ViewKind::ContactGroup];

/// What one reconcile of a membership does, decided from the membership and the view alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Being deleted: nothing to do.
    Skip,
    /// Being deleted, holding the enrollment finalizer: record the contact for the policy that
    /// created the membership, then release it.
    ReleaseEnrollment,
    /// The view holds a removal of the pair, (namespace, name): once the API server confirms
    /// it, the membership is deleted.
    OptedOut {
        /// Namespace of the removal.
        namespace: String,
        /// Name of the removal.
        name: String,
    },
    /// The view misses a referent: ask the API server; only a 404 deletes the membership.
    Confirm(Missing),
    /// Write `status.username` (`None` clears it).
    Username(Option<String>),
    /// Nothing to write.
    UpToDate,
}

/// Decides what reconciling `membership` does, from the view.
pub fn plan(membership: &Membership, store: &Store) -> Plan {
    if membership.metadata.deletion_timestamp.is_some() {
        let holds = membership
            .finalizers()
            .iter()
            .any(|f| f == enrollment::FINALIZER);
        return if holds {
            Plan::ReleaseEnrollment
        } else {
            Plan::Skip
        };
    }
    let spec = &membership.spec;
    if let Some(removal) = store
        .removals_of(&spec.contact_ref, &spec.contact_group_ref)
        .first()
    {
        return Plan::OptedOut {
            namespace: removal.namespace.to_owned(),
            name: removal.name.to_owned(),
        };
    }
    settle(membership, store)
}

/// The plan once opt-outs are ruled out: confirm missing referents, else keep the username.
pub fn settle(membership: &Membership, store: &Store) -> Plan {
    let missing = Missing::in_view(store, &membership.spec);
    if missing.any() {
        return Plan::Confirm(missing);
    }
    let c = &membership.spec.contact_ref;
    let contact = store.contact(&c.namespace, &c.name);
    username_plan(
        membership,
        contact.as_ref().and_then(referents::username_in_view),
    )
}

/// `Username` when `status.username` differs from `desired`, else `UpToDate`.
pub fn username_plan(membership: &Membership, desired: Option<&str>) -> Plan {
    let current = membership
        .status
        .as_ref()
        .and_then(|s| s.username.as_deref());
    if current == desired {
        Plan::UpToDate
    } else {
        Plan::Username(desired.map(str::to_owned))
    }
}

/// The status patch for `username`: that one field and nothing else, so conditions and provider
/// IDs written by others are never touched.
pub fn username_patch(username: Option<&str>) -> Value {
    json!({"status": {"username": username}})
}

/// Whether reconciling `membership` would do anything, from the view alone: what the sweep and
/// the wake-ups filter on, so a healthy membership costs no reconcile.
pub fn needs_work(membership: &Membership, store: &Store) -> bool {
    !matches!(plan(membership, store), Plan::Skip | Plan::UpToDate)
}

/// The memberships a change in the view concerns (see [`referents::to_wake`]).
pub fn memberships_to_wake(change: &ViewChange, view: &Store) -> Vec<ObjectKey> {
    referents::to_wake::<Membership>(change, view)
}

/// Reconciles one membership (see the module docs). Healthy memberships wait for a change (or
/// a sweep that finds them differing).
pub async fn reconcile(membership: Arc<Membership>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(membership.namespace().as_deref(), &membership.name_any());
    instrumented(
        &ctx,
        ControllerKind::Membership,
        key,
        keep(&membership, &ctx),
    )
    .await
}

async fn keep(membership: &Membership, ctx: &Context) -> Result<Action, Error> {
    let namespace = membership
        .namespace()
        .ok_or_else(|| Error::Invalid("membership has no namespace".into()))?;
    let api: Api<Membership> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = membership.name_any();
    let mut decided = plan(membership, &ctx.view.read());
    match decided {
        Plan::Skip => return Ok(Action::await_change()),
        Plan::ReleaseEnrollment => {
            release_enrollment(&api, &name, ctx).await?;
            return Ok(Action::await_change());
        }
        _ => {}
    }

    if let Plan::OptedOut {
        namespace: removal_ns,
        name: removal_name,
    } = &decided
    {
        // The view may still hold a removal that was deleted (the contact then rejoined), so the
        // removal is read before a membership is deleted on its account; one being deleted is
        // an opt-out being withdrawn and does not count.
        let removals: Api<ContactGroupMembershipRemoval> =
            Api::namespaced(ctx.client.clone(), removal_ns);
        let confirmed = kubeapi::get(&removals, removal_name)
            .await?
            .is_some_and(|r| {
                r.metadata.deletion_timestamp.is_none()
                    && r.spec.contact_ref == membership.spec.contact_ref
                    && r.spec.contact_group_ref == membership.spec.contact_group_ref
            });
        if confirmed {
            if kubeapi::delete(&api, &name).await? {
                tracing::info!(removal = %object_key(Some(removal_ns), removal_name), "deleted membership of an opted-out contact");
                let note = format!(
                    "deleted: contact {} opted out of group {} (ContactGroupMembershipRemoval {removal_ns}/{removal_name})",
                    referents::show(&membership.spec.contact_ref),
                    referents::show(&membership.spec.contact_group_ref),
                );
                ctx.event(
                    &membership.object_ref(&()),
                    "OptOutEnforced",
                    "Delete",
                    note,
                )
                .await;
            }
            return Ok(Action::await_change());
        }
        tracing::debug!(removal = %object_key(Some(removal_ns), removal_name), "the view's removal is gone; keeping the membership");
        decided = settle(membership, &ctx.view.read());
    }

    if let Plan::Confirm(missing) = decided {
        decided = match referents::confirm(&ctx.client, &membership.spec, missing).await? {
            Confirmed::Gone(referent) => {
                if kubeapi::delete(&api, &name).await? {
                    tracing::info!(%referent, "deleted membership whose {referent} is gone");
                    let note = format!(
                        "deleted: its {referent} {} no longer exists",
                        match referent {
                            referents::Referent::Contact =>
                                referents::show(&membership.spec.contact_ref),
                            referents::Referent::Group =>
                                referents::show(&membership.spec.contact_group_ref),
                        }
                    );
                    ctx.event(&membership.object_ref(&()), "ReferentGone", "Delete", note)
                        .await;
                }
                return Ok(Action::await_change());
            }
            Confirmed::Present {
                contact: Some(contact),
            } => username_plan(membership, referents::username_of(&contact)),
            Confirmed::Present { contact: None } => {
                let c = &membership.spec.contact_ref;
                let view = ctx.view.read();
                let contact = view.contact(&c.namespace, &c.name);
                username_plan(
                    membership,
                    contact.as_ref().and_then(referents::username_in_view),
                )
            }
        };
    }

    if let Plan::Username(username) = &decided {
        kubeapi::merge_patch_status(&api, &name, &username_patch(username.as_deref())).await?;
    }
    Ok(Action::await_change())
}

/// Writes the record of the policy that created the membership on its contact, then removes the
/// enrollment finalizer. The record names the policy's uid, so a policy recreated under the same
/// name evaluates afresh; it is written whether or not the policy is still in the view, as a view
/// that has not caught up must never let a contact go unrecorded. Read from the API server, as
/// the view keeps no annotations; only memberships being deleted come here.
async fn release_enrollment(api: &Api<Membership>, name: &str, ctx: &Context) -> Result<(), Error> {
    let Some(current) = kubeapi::get(api, name).await? else {
        return Ok(());
    };
    let holds = current
        .finalizers()
        .iter()
        .any(|f| f == enrollment::FINALIZER);
    if current.metadata.deletion_timestamp.is_none() || !holds {
        return Ok(());
    }
    let annotations = current.annotations();
    let policy = annotations.get(enrollment::POLICY_NAME_ANNOTATION);
    let uid = annotations.get(enrollment::POLICY_UID_ANNOTATION);
    let contact = &current.spec.contact_ref;
    if let Some(policy) = policy {
        let key = enrollment::record_key(policy);
        let value = enrollment::Record::Enrolled.value(uid.map(String::as_str));
        let shown = ctx
            .view
            .read()
            .contact_record(&contact.namespace, &contact.name, &key)
            .is_some_and(|v| v == value);
        if !shown {
            let contacts = Api::<Contact>::namespaced(ctx.client.clone(), &contact.namespace);
            let patch = json!({"metadata": {"annotations": {&key: &value}}});
            match kubeapi::merge_patch(&contacts, &contact.name, &patch).await {
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                other => other?,
            }
        }
        ctx.enrollment_records
            .remember(policy, contact, enrollment::Record::Enrolled);
        let key = object_key(current.namespace().as_deref(), name);
        tracing::debug!(membership = %key, "enrollment recorded on the contact as its membership goes");
    }
    kubeapi::release_finalizer(api, name, enrollment::FINALIZER).await?;
    Ok(())
}

/// Runs the membership controller until its task is aborted (leadership lost). It starts once
/// the view has synced, so no decision is made on a half-filled view.
pub async fn run(ctx: Arc<Context>) {
    referents::run_pair_controller::<Membership, _, _>(
        ctx,
        ControllerKind::Membership,
        &RELISTS,
        reconcile,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Contact, ContactGroup};
    use serde_json::json;

    fn membership(name: &str, contact: &str, status: Value) -> Membership {
        serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupMembership",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "contactRef": {"name": contact, "namespace": "ns"},
                "contactGroupRef": {"name": "g", "namespace": "groups"}
            },
            "status": status,
        }))
        .unwrap()
    }

    fn removal(name: &str, contact: &str) -> ContactGroupMembershipRemoval {
        serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupMembershipRemoval",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "contactRef": {"name": contact, "namespace": "ns"},
                "contactGroupRef": {"name": "g", "namespace": "groups"}
            }
        }))
        .unwrap()
    }

    fn contact(name: &str, subject: Value) -> Contact {
        serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"email": format!("{name}@example.com"), "subject": subject}
        }))
        .unwrap()
    }

    fn user(name: &str) -> Value {
        json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": name})
    }

    fn store_with(subject: Value) -> Store {
        let mut store = Store::default();
        store.apply_contact(&contact("c", subject));
        store.apply_group(
            &serde_json::from_value::<ContactGroup>(json!({
                "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
                "metadata": {"name": "g", "namespace": "groups"},
                "spec": {"displayName": "News", "visibility": "public"}
            }))
            .unwrap(),
        );
        store
    }

    fn roots(objects: Vec<Membership>) -> Vec<Membership> {
        objects
    }

    /// The objects woken, with `roots` (the controller's own objects) in the view too.
    fn memberships_to_wake(
        change: &ViewChange,
        store: &Store,
        roots: &[Membership],
    ) -> Vec<ObjectKey> {
        let mut store = store.clone();
        for root in roots {
            store.apply_membership(root);
        }
        super::memberships_to_wake(change, &store)
    }

    fn names(refs: Vec<ObjectKey>) -> Vec<String> {
        let mut names: Vec<_> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn plan_sets_clears_or_keeps_the_username() {
        let store = store_with(user("u1"));
        let m = membership("m", "c", json!({}));
        assert_eq!(plan(&m, &store), Plan::Username(Some("u1".into())));
        let current = membership("m", "c", json!({"username": "u1"}));
        assert_eq!(plan(&current, &store), Plan::UpToDate);
        let no_user = store_with(Value::Null);
        assert_eq!(plan(&current, &no_user), Plan::Username(None));
        assert_eq!(plan(&m, &no_user), Plan::UpToDate);
        let org = store_with(
            json!({"apiGroup": "resourcemanager.miloapis.com", "kind": "Organization", "name": "o"}),
        );
        assert_eq!(plan(&current, &org), Plan::Username(None));
    }

    #[test]
    fn plan_deletes_opted_out_memberships_before_anything_else() {
        let mut store = Store::default();
        store.apply_removal(&removal("r", "c"));
        assert_eq!(
            plan(&membership("m", "c", json!({})), &store),
            Plan::OptedOut {
                namespace: "ns".into(),
                name: "r".into()
            }
        );
        assert_eq!(
            plan(&membership("m", "d", json!({})), &store),
            Plan::Confirm(Missing {
                contact: true,
                group: true
            })
        );
        let mut deleting = membership("m", "c", json!({}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert_eq!(plan(&deleting, &store), Plan::Skip);
    }

    #[test]
    fn the_patch_carries_the_username_only() {
        assert_eq!(
            username_patch(Some("u1")),
            json!({"status": {"username": "u1"}})
        );
        assert_eq!(username_patch(None), json!({"status": {"username": null}}));
    }

    #[test]
    fn removal_applied_wakes_the_memberships_of_its_pair() {
        let mut store = store_with(user("u1"));
        store.apply_removal(&removal("r", "c"));
        let members = vec![
            membership("m1", "c", json!({})),
            membership("m2", "c", json!({})),
            membership("other", "d", json!({})),
        ];
        // The view holds the memberships, as it does in a cluster; the pair index finds them.
        for m in &members {
            store.apply_membership(m);
        }
        let roots = roots(members);
        let change = ViewChange::Applied(ViewKind::Removal, "ns".into(), "r".into());
        assert_eq!(
            names(memberships_to_wake(&change, &store, &roots)),
            ["m1", "m2"]
        );
        let unknown = ViewChange::Applied(ViewKind::Removal, "ns".into(), "x".into());
        assert!(memberships_to_wake(&unknown, &store, &roots).is_empty());
    }

    #[test]
    fn contact_applied_wakes_memberships_whose_username_is_stale() {
        let store = store_with(user("u1"));
        let roots = roots(vec![
            membership("stale", "c", json!({})),
            membership("current", "c", json!({"username": "u1"})),
            membership("other", "d", json!({})),
        ]);
        let change = ViewChange::Applied(ViewKind::Contact, "ns".into(), "c".into());
        assert_eq!(
            names(memberships_to_wake(&change, &store, &roots)),
            ["stale"]
        );
        let cleared = store_with(Value::Null);
        assert_eq!(
            names(memberships_to_wake(&change, &cleared, &roots)),
            ["current"]
        );
    }

    #[test]
    fn referent_deleted_wakes_memberships_naming_it() {
        let store = Store::default();
        let roots = roots(vec![
            membership("m1", "c", json!({"username": "u1"})),
            membership("m2", "d", json!({})),
        ]);
        let contact_gone = ViewChange::Deleted(ViewKind::Contact, "ns".into(), "c".into());
        assert_eq!(
            names(memberships_to_wake(&contact_gone, &store, &roots)),
            ["m1"]
        );
        let group_gone = ViewChange::Deleted(ViewKind::ContactGroup, "groups".into(), "g".into());
        assert_eq!(
            names(memberships_to_wake(&group_gone, &store, &roots)),
            ["m1", "m2"]
        );
        for change in [
            ViewChange::Applied(ViewKind::ContactGroup, "groups".into(), "g".into()),
            ViewChange::Deleted(ViewKind::Removal, "ns".into(), "r".into()),
            ViewChange::Relisted(ViewKind::Removal),
        ] {
            assert!(
                memberships_to_wake(&change, &store, &roots).is_empty(),
                "{change:?}"
            );
        }
    }

    #[test]
    fn a_membership_applied_wakes_itself_only_when_it_needs_work() {
        let store = store_with(user("u1"));
        let change = ViewChange::Applied(ViewKind::Membership, "ns".into(), "m".into());
        let stale = [membership("m", "c", json!({}))];
        assert_eq!(names(memberships_to_wake(&change, &store, &stale)), ["m"]);
        let current = [membership("m", "c", json!({"username": "u1"}))];
        assert!(
            memberships_to_wake(&change, &store, &current).is_empty(),
            "its username is current: nothing to do"
        );
        let mut opted_out = store_with(user("u1"));
        opted_out.apply_removal(&removal("r", "c"));
        assert_eq!(
            names(memberships_to_wake(&change, &opted_out, &current)),
            ["m"]
        );
    }
}
