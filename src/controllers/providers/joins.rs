//! Which memberships a provider may mirror, decided in one place for every provider: a live
//! membership joins its group's counterpart (a Resend segment, a Loops list) only once that is
//! mirrored, and never while a removal (an opt-out) of the pair exists. A contact's first
//! create carries the joins of its memberships, so those cost no call of their own.

use crate::api::common::ObjectRef;
use crate::api::common::ProviderName;
use crate::api::notification::Visibility;
use crate::controllers::ObjectKey;
use crate::view::{GroupSync, MembershipSync, Store};

fn refs(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The id `provider` holds for `group` (a segment id, a list id), once mirrored.
pub fn group_id<'v>(provider: ProviderName, group: &GroupSync<'v>) -> Option<&'v str> {
    if !group.marks.synced(provider) {
        return None;
    }
    match provider {
        ProviderName::Resend => group.segment,
        ProviderName::Loops => group.loops_list,
    }
}

/// The id of the group counterpart the live membership `m` may join at `provider` once its
/// contact is mirrored: its group is mirrored and not being deleted, and no removal (an opt-out)
/// covers the pair (nor an opt-out about to become one). Every plan and every contact's create ask this, so consent is decided here.
pub fn joinable<'v>(
    view: &'v Store,
    m: &MembershipSync<'_>,
    provider: ProviderName,
) -> Option<&'v str> {
    let group = view.group_sync(m.group.namespace, m.group.name)?;
    if m.deleting || group.deleting {
        return None;
    }
    // The person left this private group's list at Loops: only their own act there undoes it.
    if provider == ProviderName::Loops && m.marks.loops_list_opt_out() {
        return None;
    }
    // An opt-out reported but not yet turned into removals counts as those removals.
    let pending = group.visibility == Visibility::Public
        && view
            .contact_sync(m.contact.namespace, m.contact.name)
            .is_some_and(|c| c.unsubscribe_pending);
    let removed = pending
        || !view
            .removals_of(
                &refs(m.contact.namespace, m.contact.name),
                &refs(m.group.namespace, m.group.name),
            )
            .is_empty();
    if removed {
        None
    } else {
        group_id(provider, &group)
    }
}

/// What a contact's create can carry for its memberships.
#[derive(Debug, Default)]
pub struct Joins {
    /// Memberships whose group the create may join, with the group's id at the provider.
    pub groups: Vec<(ObjectKey, String)>,
    /// A group of one of its live memberships is not mirrored yet (worth a short wait).
    pub groups_pending: bool,
}

impl Joins {
    /// The group ids to send, each once.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.groups.iter().map(|(_, s)| s.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// What creating the contact `namespace/name` at `provider` can carry: the groups of its live
/// memberships that the provider's membership plan would join once the contact is mirrored.
pub fn joins(view: &Store, namespace: &str, name: &str, provider: ProviderName) -> Joins {
    let mut joins = Joins::default();
    for r in view.memberships_of_contact(namespace, name) {
        let Some(m) = view.membership_sync(r.namespace, r.name) else {
            continue;
        };
        match joinable(view, &m, provider) {
            Some(id) => joins
                .groups
                .push((ObjectKey::new(r.namespace, r.name), id.to_owned())),
            None => {
                joins.groups_pending |= !m.deleting
                    && view
                        .group_sync(m.group.namespace, m.group.name)
                        .is_some_and(|g| {
                            !g.deleting
                                && super::mirrors_group(provider, &g)
                                && !g.marks.synced(provider)
                        })
            }
        }
    }
    joins
}

/// How long a new contact waits for its groups to be mirrored, counted from when the sync started
/// or the Contact was made, whichever is later: creating it with them saves a call per
/// membership, and a group that cannot be mirrored holds nobody up for longer.
pub const GROUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether waiting for a group is still worth it for `contact`, the sync having started at
/// `started`.
pub fn may_wait_for_groups(started: std::time::Instant, contact: &crate::api::Contact) -> bool {
    let since_start = started.elapsed();
    let since_made = contact
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| jiff::Timestamp::now().duration_since(t.0).try_into().ok())
        .unwrap_or(std::time::Duration::MAX);
    since_start.min(since_made) < GROUP_WAIT
}

/// Whether the person opted out, as far as the cluster knows (an opt-out at any provider
/// reaches the Contact as this condition): a contact created or recreated at a provider carries
/// it, and joins nothing by its create.
pub fn opted_out(contact: &crate::api::Contact) -> bool {
    contact.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == crate::api::common::sync::UNSUBSCRIBED && c.status == "True")
    })
}

/// What a join of `email` to `group` is remembered as (see [`super::answers`]): the same
/// whether the join was its own call or rode on the contact's create.
pub fn stamp(email: &str, group: &str) -> String {
    format!("{email}/{group}")
}
