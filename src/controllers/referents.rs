//! What the removal and membership controllers share: both name a (contact, group) pair, both
//! derive `status.username` from the contact, both delete themselves when a referent is really
//! gone, and both are woken by the view's change feed the same way.
//!
//! "Really gone" is the one destructive decision here, so it is never taken on the view alone: a
//! view miss is only a reason to ask the API server, and only its 404 deletes anything (the view
//! may lag a contact created a moment ago).

use std::fmt;

use kube::{Api, Client, Resource};

use super::runner::{self, Driver, ObjectKey};
use super::{ControllerKind, kubeapi};
use crate::api::common::ObjectRef;
use crate::api::notification::ContactGroupPair;
use crate::api::{Contact, ContactGroup};
use crate::view::{ContactView, Store, ViewChange, ViewKind};

/// The subject kind whose name becomes `status.username`.
pub const USER_KIND: &str = "User";

/// The username a contact's subject gives, from the view: the subject's name when it is a User.
pub fn username_in_view<'a>(contact: &ContactView<'a>) -> Option<&'a str> {
    contact
        .subject
        .filter(|s| s.kind == USER_KIND)
        .map(|s| s.name)
}

/// The username a contact read from the API server gives (used when the view lags the contact).
pub fn username_of(contact: &Contact) -> Option<&str> {
    contact
        .spec
        .subject
        .as_ref()
        .filter(|s| s.kind == USER_KIND)
        .map(|s| s.name.as_str())
}

/// Which referents of a pair the view does not hold; either one is a reason to ask the API
/// server, never a reason to delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// The contact is not in the view.
    pub contact: bool,
    /// The group is not in the view.
    pub group: bool,
}

impl Missing {
    /// What the view misses of `pair`'s contact and group.
    pub fn in_view(store: &Store, pair: &impl ContactGroupPair) -> Self {
        let (c, g) = (pair.contact_ref(), pair.contact_group_ref());
        Self {
            contact: store.contact(&c.namespace, &c.name).is_none(),
            group: store.group(&g.namespace, &g.name).is_none(),
        }
    }

    /// Whether anything is missing.
    pub fn any(self) -> bool {
        self.contact || self.group
    }
}

/// A referent of a membership or removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Referent {
    /// The Contact.
    Contact,
    /// The ContactGroup.
    Group,
}

impl fmt::Display for Referent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Referent::Contact => "contact",
            Referent::Group => "group",
        })
    }
}

/// What the API server said about the referents the view misses.
#[derive(Clone, Debug)]
pub enum Confirmed {
    /// Everything exists: the view lags. `contact` is the contact as read, when the view missed
    /// it, so its username can be used at once.
    Present {
        /// The contact read from the API server (only when the view missed it).
        contact: Option<Box<Contact>>,
    },
    /// This referent is gone: the object naming it should be deleted.
    Gone(Referent),
}

/// Asks the API server about the referents the view misses (the contact first). Nothing is read
/// when nothing is missing.
pub async fn confirm(
    client: &Client,
    pair: &impl ContactGroupPair,
    missing: Missing,
) -> Result<Confirmed, kube::Error> {
    let mut contact = None;
    if missing.contact {
        let c = pair.contact_ref();
        let api: Api<Contact> = Api::namespaced(client.clone(), &c.namespace);
        match kubeapi::get(&api, &c.name).await? {
            Some(found) => contact = Some(Box::new(found)),
            None => return Ok(Confirmed::Gone(Referent::Contact)),
        }
    }
    if missing.group {
        let g = pair.contact_group_ref();
        let api: Api<ContactGroup> = Api::namespaced(client.clone(), &g.namespace);
        if kubeapi::get(&api, &g.name).await?.is_none() {
            return Ok(Confirmed::Gone(Referent::Group));
        }
    }
    Ok(Confirmed::Present { contact })
}

/// `namespace/name` of a reference, for messages and logs.
pub fn show(r: &ObjectRef) -> String {
    format!("{}/{}", r.namespace, r.name)
}

/// What memberships and removals share for being woken by the view: both name a (contact, group)
/// pair, carry `status.username`, and must react to the other kind's arrival for that pair.
pub trait PairObject: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// This kind's table in the view.
    const KIND: ViewKind;
    /// The kind whose arrival concerns this one (removals for memberships and vice versa).
    const COUNTERPART: ViewKind;
    /// The (contact, group) pair.
    fn pair(&self) -> &dyn PairRefs;
    /// `status.username`, as last written.
    fn username(&self) -> Option<&str>;
    /// The pair the counterpart `namespace/name` names, from the view.
    fn counterpart_pair(
        view: &Store,
        namespace: &str,
        name: &str,
    ) -> Option<(ObjectRef, ObjectRef)>;
    /// Objects of this kind for `contact` in `group`, from the view.
    fn of_pair<'a>(
        view: &'a Store,
        contact: &ObjectRef,
        group: &ObjectRef,
    ) -> Vec<crate::view::NamedRef<'a>>;
    /// Objects of this kind naming the contact `namespace/name`, from the view.
    fn of_contact<'a>(
        view: &'a Store,
        namespace: &str,
        name: &str,
    ) -> Vec<crate::view::NamedRef<'a>>;
    /// The object `namespace/name` as its controller reads it, rebuilt from the view.
    fn materialize(view: &Store, namespace: &str, name: &str) -> Option<Self>;
    /// Whether reconciling it would do anything, decided from the view alone.
    fn needs_work(&self, view: &Store) -> bool;
}

/// Object-safe access to a pair's references.
pub trait PairRefs {
    /// The contact.
    fn contact(&self) -> &ObjectRef;
    /// The group.
    fn group(&self) -> &ObjectRef;
}

impl<T: ContactGroupPair> PairRefs for T {
    fn contact(&self) -> &ObjectRef {
        self.contact_ref()
    }
    fn group(&self) -> &ObjectRef {
        self.contact_group_ref()
    }
}

impl PairObject for crate::api::ContactGroupMembership {
    const KIND: ViewKind = ViewKind::Membership;
    const COUNTERPART: ViewKind = ViewKind::Removal;
    fn pair(&self) -> &dyn PairRefs {
        &self.spec
    }
    fn username(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.username.as_deref())
    }
    fn counterpart_pair(
        view: &Store,
        namespace: &str,
        name: &str,
    ) -> Option<(ObjectRef, ObjectRef)> {
        view.removal(namespace, name)
    }
    fn of_pair<'a>(
        view: &'a Store,
        contact: &ObjectRef,
        group: &ObjectRef,
    ) -> Vec<crate::view::NamedRef<'a>> {
        view.memberships_of(contact, group)
    }
    fn of_contact<'a>(
        view: &'a Store,
        namespace: &str,
        name: &str,
    ) -> Vec<crate::view::NamedRef<'a>> {
        view.memberships_of_contact(namespace, name)
    }
    fn materialize(view: &Store, namespace: &str, name: &str) -> Option<Self> {
        view.membership_object(namespace, name)
    }
    fn needs_work(&self, view: &Store) -> bool {
        super::membership::needs_work(self, view)
    }
}

impl PairObject for crate::api::ContactGroupMembershipRemoval {
    const KIND: ViewKind = ViewKind::Removal;
    const COUNTERPART: ViewKind = ViewKind::Membership;
    fn pair(&self) -> &dyn PairRefs {
        &self.spec
    }
    fn username(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.username.as_deref())
    }
    fn counterpart_pair(
        view: &Store,
        namespace: &str,
        name: &str,
    ) -> Option<(ObjectRef, ObjectRef)> {
        view.membership(namespace, name)
    }
    fn of_pair<'a>(
        view: &'a Store,
        contact: &ObjectRef,
        group: &ObjectRef,
    ) -> Vec<crate::view::NamedRef<'a>> {
        view.removals_of(contact, group)
    }
    fn of_contact<'a>(
        view: &'a Store,
        namespace: &str,
        name: &str,
    ) -> Vec<crate::view::NamedRef<'a>> {
        view.removals_of_contact(namespace, name)
    }
    fn materialize(view: &Store, namespace: &str, name: &str) -> Option<Self> {
        view.removal_object(namespace, name)
    }
    fn needs_work(&self, view: &Store) -> bool {
        super::removal::needs_work(self, view)
    }
}

fn keys(refs: Vec<crate::view::NamedRef<'_>>) -> Vec<ObjectKey> {
    refs.into_iter()
        .map(|r| ObjectKey::new(r.namespace, r.name))
        .collect()
}

/// The objects of kind `K` a change in the view concerns:
/// - the object itself applied, when reconciling it would do anything;
/// - the counterpart applied: the objects of its pair, found through the view's pair index;
/// - a contact applied: objects naming it whose `status.username` no longer matches;
/// - a contact or group deleted: objects naming it (they are deleted in turn).
pub fn to_wake<K: PairObject>(change: &ViewChange, view: &Store) -> Vec<ObjectKey> {
    match change {
        ViewChange::Applied(kind, ns, name) if *kind == K::KIND => K::materialize(view, ns, name)
            .filter(|object| object.needs_work(view))
            .map(|_| vec![ObjectKey::new(ns, name)])
            .unwrap_or_default(),
        ViewChange::Applied(kind, ns, name) if *kind == K::COUNTERPART => {
            let Some((contact, group)) = K::counterpart_pair(view, ns, name) else {
                return Vec::new();
            };
            keys(K::of_pair(view, &contact, &group))
        }
        ViewChange::Applied(ViewKind::Contact, ns, name) => {
            // Not in the view any more: the Deleted that follows does the waking.
            let Some(contact) = view.contact(ns, name) else {
                return Vec::new();
            };
            let username = username_in_view(&contact);
            let mut stale = K::of_contact(view, ns, name);
            stale.retain(|r| {
                K::materialize(view, r.namespace, r.name).is_some_and(|o| o.username() != username)
            });
            keys(stale)
        }
        ViewChange::Deleted(ViewKind::Contact, ns, name) => keys(K::of_contact(view, ns, name)),
        ViewChange::Deleted(ViewKind::ContactGroup, ns, name) => {
            keys(view.naming_group(K::KIND, ns, name))
        }
        _ => Vec::new(),
    }
}

/// The objects of kind `K` whose reconcile would do anything, decided in memory.
pub fn sweep<K: PairObject>(view: &Store) -> Vec<ObjectKey> {
    view.names(K::KIND)
        .into_iter()
        .filter(|(ns, name)| K::materialize(view, ns, name).is_some_and(|o| o.needs_work(view)))
        .map(|(namespace, name)| ObjectKey { namespace, name })
        .collect()
}

/// Runs a membership or removal controller until its task is aborted (leadership lost): woken
/// by the view's changes through [`to_wake`], swept by [`sweep`] at start, on relists of
/// `relists` and every resync. Each reconcile reads its object rebuilt from the view.
pub async fn run_pair_controller<K, R, Fut>(
    ctx: std::sync::Arc<super::Context>,
    kind: ControllerKind,
    relists: &'static [ViewKind],
    reconcile: R,
) where
    K: PairObject,
    R: Fn(std::sync::Arc<K>, std::sync::Arc<super::Context>) -> Fut,
    Fut: std::future::Future<Output = Result<super::Action, super::Error>>,
{
    let driver = Driver {
        kind,
        concurrency: ctx.settings.concurrency,
        resync: ctx.settings.resync,
        relists,
        wake_delay: std::time::Duration::ZERO,
        sweep: sweep::<K>,
        wake: to_wake::<K>,
        depth: ctx.queue_depth(kind),
    };
    let reconcile = &reconcile;
    let ctx = &ctx;
    runner::drive(&ctx.view, driver, |key| async move {
        let Some(object) = K::materialize(&ctx.view.read(), &key.namespace, &key.name) else {
            return super::Action::await_change();
        };
        match reconcile(std::sync::Arc::new(object), ctx.clone()).await {
            Ok(action) => action,
            Err(error) => super::retry_after(ctx, kind, &key.to_string(), &error),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::notification::ContactGroupMembershipSpec;
    use serde_json::json;

    fn contact(subject: Option<(&str, &str)>) -> Contact {
        let mut c: Contact = serde_json::from_value(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"email": "c@example.com"}
        }))
        .unwrap();
        c.spec.subject = subject.map(|(kind, name)| crate::api::notification::SubjectRef {
            api_group: "iam.miloapis.com".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: None,
        });
        c
    }

    #[test]
    fn only_user_subjects_give_a_username() {
        assert_eq!(username_of(&contact(Some(("User", "u1")))), Some("u1"));
        assert_eq!(username_of(&contact(Some(("Organization", "o")))), None);
        assert_eq!(username_of(&contact(None)), None);
        let mut store = Store::default();
        store.apply_contact(&contact(Some(("User", "u1"))));
        let view = store.contact("ns", "c").unwrap();
        assert_eq!(username_in_view(&view), Some("u1"));
    }

    #[test]
    fn missing_reports_each_referent() {
        let mut store = Store::default();
        store.apply_contact(&contact(None));
        let pair = ContactGroupMembershipSpec {
            contact_ref: ObjectRef {
                name: "c".into(),
                namespace: "ns".into(),
            },
            contact_group_ref: ObjectRef {
                name: "g".into(),
                namespace: "ns".into(),
            },
        };
        let missing = Missing::in_view(&store, &pair);
        assert_eq!(
            missing,
            Missing {
                contact: false,
                group: true
            }
        );
        assert!(missing.any());
    }
}
