//! What the removal and membership controllers share: both name a (contact, group) pair, both
//! derive `status.username` from the contact, both delete themselves when a referent is really
//! gone, and both are woken by the view's change feed the same way.
//!
//! "Really gone" is the one destructive decision here, so it is never taken on the view alone: a
//! view miss is only a reason to ask the API server, and only its 404 deletes anything (the view
//! may lag a contact created a moment ago).

use std::fmt;

use futures::channel::mpsc;
use futures::{Stream, StreamExt, stream};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, Resource};

use super::{ControllerKind, kubeapi};
use crate::api::common::ObjectRef;
use crate::api::notification::ContactGroupPair;
use crate::api::{Contact, ContactGroup};
use crate::view::{ClusterView, ContactView, Store, ViewChange, ViewKind};

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

/// Whether `pair` names the contact `namespace/name`.
pub fn names_contact(pair: &impl ContactGroupPair, namespace: &str, name: &str) -> bool {
    let c = pair.contact_ref();
    c.namespace == namespace && c.name == name
}

/// Whether `pair` names the group `namespace/name`.
pub fn names_group(pair: &impl ContactGroupPair, namespace: &str, name: &str) -> bool {
    let g = pair.contact_group_ref();
    g.namespace == namespace && g.name == name
}

/// The reconciler's own objects matching `predicate`, as the references `reconcile_on` wants.
pub fn refs_where<K>(
    roots: &reflector::Store<K>,
    predicate: impl Fn(&K) -> bool,
) -> Vec<reflector::ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    roots
        .state_filter(|k| predicate(k))
        .iter()
        .map(|k| reflector::ObjectRef::from_obj(k.as_ref()))
        .collect()
}

/// The view's change feed split into the two trigger streams a controller takes: the objects
/// `wake` maps each change to (for `reconcile_on`), and a tick for every relist of a kind in
/// `relists` (for `reconcile_all_on`). One subscription feeds both, so a listener that falls
/// behind turns into relists instead of silently missed changes; the relist stream is driven by
/// the controller polling the first.
pub fn wake_streams<K, W>(
    view: &std::sync::Arc<ClusterView>,
    relists: &'static [ViewKind],
    wake: W,
) -> (
    impl Stream<Item = reflector::ObjectRef<K>> + Send + 'static,
    impl Stream<Item = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + 'static,
    W: Fn(&ViewChange, &Store) -> Vec<reflector::ObjectRef<K>> + Send + 'static,
{
    let (relist_tx, relist_rx) = mpsc::unbounded();
    let changes = super::view_changes(view);
    let view = view.clone();
    let targeted = changes.flat_map(move |change| {
        let woken = match &change {
            ViewChange::Relisted(kind) => {
                if relists.contains(kind) {
                    // The receiver lives as long as the controller; a send error means it stopped.
                    let _ = relist_tx.unbounded_send(());
                }
                Vec::new()
            }
            _ => wake(&change, &view.read()),
        };
        stream::iter(woken)
    });
    (targeted, relist_rx)
}

/// What memberships and removals share for being woken by the view: both name a (contact, group)
/// pair, carry `status.username`, and must react to the other kind's arrival for that pair.
pub trait PairObject: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
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
}

impl PairObject for crate::api::ContactGroupMembershipRemoval {
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
}

/// The objects of kind `K` a change in the view concerns, among the controller's own (`roots`):
/// - the counterpart applied: the objects of its pair, found through the view's pair index;
/// - a contact applied: objects naming it whose `status.username` no longer matches;
/// - a contact or group deleted: objects naming it (they are deleted in turn).
pub fn to_wake<K: PairObject>(
    change: &ViewChange,
    view: &Store,
    roots: &reflector::Store<K>,
) -> Vec<reflector::ObjectRef<K>> {
    let names = |r: &ObjectRef, ns: &str, name: &str| r.namespace == ns && r.name == name;
    match change {
        ViewChange::Applied(kind, ns, name) if *kind == K::COUNTERPART => {
            let Some((contact, group)) = K::counterpart_pair(view, ns, name) else {
                return Vec::new();
            };
            K::of_pair(view, &contact, &group)
                .into_iter()
                .map(|r| reflector::ObjectRef::<K>::new(r.name).within(r.namespace))
                .collect()
        }
        ViewChange::Applied(ViewKind::Contact, ns, name) => {
            // Not in the view any more: the Deleted that follows does the waking.
            let Some(contact) = view.contact(ns, name) else {
                return Vec::new();
            };
            let username = username_in_view(&contact);
            refs_where(roots, |o| {
                names(o.pair().contact(), ns, name) && o.username() != username
            })
        }
        ViewChange::Deleted(ViewKind::Contact, ns, name) => {
            refs_where(roots, |o| names(o.pair().contact(), ns, name))
        }
        ViewChange::Deleted(ViewKind::ContactGroup, ns, name) => {
            refs_where(roots, |o| names(o.pair().group(), ns, name))
        }
        _ => Vec::new(),
    }
}

/// Runs a membership or removal controller until its task is aborted (leadership lost): its
/// root watch, woken also by the view's changes through [`to_wake`] and by relists of
/// `relists`. It starts once the view has synced, so no decision is made on a half-filled view.
pub async fn run_pair_controller<K, R, Fut>(
    ctx: std::sync::Arc<super::Context>,
    kind: ControllerKind,
    relists: &'static [ViewKind],
    reconcile: R,
) where
    K: PairObject + serde::de::DeserializeOwned + fmt::Debug,
    R: FnMut(std::sync::Arc<K>, std::sync::Arc<super::Context>) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action, super::Error>>
        + Send
        + 'static,
{
    super::until_synced(&ctx.view).await;
    let api: Api<K> = Api::all(ctx.client.clone());
    let controller = kube::runtime::Controller::new(api, watcher::Config::default());
    let roots = controller.store();
    let (targeted, relisted) = wake_streams(&ctx.view, relists, move |change, view| {
        to_wake(change, view, &roots)
    });
    let error_policy = move |object: std::sync::Arc<K>,
                             error: &super::Error,
                             ctx: std::sync::Arc<super::Context>| {
        let key = super::object_key(
            object.meta().namespace.as_deref(),
            object.meta().name.as_deref().unwrap_or_default(),
        );
        super::retry_after(&ctx, kind, &key, error)
    };
    tracing::info!(controller = kind.as_str(), "controller started");
    controller
        .reconcile_on(targeted)
        .reconcile_all_on(relisted)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move { super::log_run_result(kind, result) })
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

    #[tokio::test]
    async fn one_subscription_feeds_targeted_wakes_and_relevant_relists() {
        use crate::api::ContactGroupMembership;
        use futures::FutureExt;
        let view = std::sync::Arc::new(ClusterView::offline(Store::default()));
        let (targeted, relists) =
            wake_streams::<ContactGroupMembership, _>(&view, &[ViewKind::Contact], |change, _| {
                match change {
                    ViewChange::Applied(ViewKind::Contact, ns, name) => {
                        vec![reflector::ObjectRef::new(name).within(ns)]
                    }
                    _ => Vec::new(),
                }
            });
        let (mut targeted, mut relists) = (Box::pin(targeted), Box::pin(relists));
        view.announce(ViewChange::Relisted(ViewKind::User));
        view.announce(ViewChange::Relisted(ViewKind::Contact));
        view.announce(ViewChange::Applied(
            ViewKind::Contact,
            "ns".into(),
            "a".into(),
        ));
        let woken = targeted.next().await.unwrap();
        assert_eq!(
            (woken.namespace.as_deref(), woken.name.as_str()),
            (Some("ns"), "a")
        );
        assert_eq!(relists.next().now_or_never(), Some(Some(())));
        assert_eq!(
            relists.next().now_or_never(),
            None,
            "a User relist is not ours"
        );

        // Falling behind the feed becomes a relist of every kind, of which ours wakes everything.
        for i in 0..20_000 {
            view.announce(ViewChange::Deleted(
                ViewKind::Membership,
                "ns".into(),
                i.to_string(),
            ));
        }
        assert!(targeted.next().now_or_never().is_none());
        assert_eq!(relists.next().now_or_never(), Some(Some(())));
        assert_eq!(relists.next().now_or_never(), None);
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
        assert!(names_contact(&pair, "ns", "c") && !names_contact(&pair, "ns", "g"));
        assert!(names_group(&pair, "ns", "g") && !names_group(&pair, "other", "g"));
    }
}
