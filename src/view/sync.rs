//! Provider-sync fields: what the leader's Resend sync reads of Contacts, ContactGroups and
//! memberships. A contact's and a membership's marks are three booleans that fit in padding the
//! rows already have, so mirroring to a provider costs no bytes per object; groups, which are few,
//! keep their uid and segment id in a side table.
//!
//! "Synced" is read back from the object itself: the sync's condition is True and was written
//! for the object's current generation. So what was last synced survives a restart, and an object
//! whose spec has not changed since is never looked at again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ObjectMeta;

use super::store::{NamedRef, Row, Store, ViewKind};
use crate::api::ContactGroup;
use crate::api::common::sync::SyncedObject;
use crate::api::common::{ProviderName, ProviderSyncStatus, SyncedKind, sync};
use crate::api::notification::Visibility;

/// What each provider's condition and finalizer, and the aggregate `Ready`, say of one object:
/// bits of one byte, so a row keeps them in what would be padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncMarks(u8);

/// Bit of `provider`'s condition; its finalizer's is two places up.
fn bit(provider: ProviderName) -> u8 {
    1 << (provider as u8)
}
const FINALIZER_SHIFT: u8 = 2;
const READY_BIT: u8 = 1 << 4;
/// A membership whose person left its group's Loops list at Loops ([`sync::loops_list_opt_out`]).
const LOOPS_LIST_OPT_OUT: u8 = 1 << 5;

impl SyncMarks {
    /// The marks of an object of `kind`, for every provider.
    pub fn read(meta: &ObjectMeta, conditions: &[Condition], kind: SyncedObject) -> Self {
        let current = |type_: &str| {
            conditions.iter().any(|c| {
                c.type_ == type_ && c.status == "True" && c.observed_generation == meta.generation
            })
        };
        let finalizers = meta.finalizers.as_deref().unwrap_or_default();
        let mut marks = Self(if current(sync::READY) { READY_BIT } else { 0 });
        if kind == SyncedObject::Membership && sync::loops_list_opt_out(conditions) {
            marks.0 |= LOOPS_LIST_OPT_OUT;
        }
        for provider in sync::PROVIDERS {
            if current(sync::condition(provider, kind)) {
                marks = marks.with_synced(provider);
            }
            if finalizers.iter().any(|f| f == sync::finalizer(provider)) {
                marks = marks.with_finalizer(provider);
            }
        }
        marks
    }

    /// `provider`'s condition is True for the current generation.
    pub fn synced(&self, provider: ProviderName) -> bool {
        self.0 & bit(provider) != 0
    }

    /// `provider`'s finalizer is on the object.
    pub fn finalizer(&self, provider: ProviderName) -> bool {
        self.0 & (bit(provider) << FINALIZER_SHIFT) != 0
    }

    /// `Ready` is True for the current generation.
    pub fn ready(&self) -> bool {
        self.0 & READY_BIT != 0
    }

    /// A membership whose person left the group's Loops list at Loops and has not rejoined it
    /// there: Loops sync never puts them back on it.
    pub fn loops_list_opt_out(&self) -> bool {
        self.0 & LOOPS_LIST_OPT_OUT != 0
    }

    /// These marks with `provider` synced.
    pub fn with_synced(self, provider: ProviderName) -> Self {
        Self(self.0 | bit(provider))
    }

    /// These marks with `provider`'s finalizer.
    pub fn with_finalizer(self, provider: ProviderName) -> Self {
        Self(self.0 | (bit(provider) << FINALIZER_SHIFT))
    }

    /// These marks with `Ready` True.
    pub fn with_ready(self) -> Self {
        Self(self.0 | READY_BIT)
    }
}

/// Whether a Contact's `Unsubscribed` condition asks for removals not yet created.
pub fn unsubscribe_pending(conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| {
        c.type_ == sync::UNSUBSCRIBED && c.status == "True" && c.observed_generation.is_none()
    })
}

/// The id of Resend's entry in `status.providers`.
pub fn resend_id<K: SyncedKind>(status: Option<&ProviderSyncStatus<K>>) -> Option<&str> {
    provider_id(status, ProviderName::Resend)
}

/// The id of `provider`'s entry in `status.providers`.
pub fn provider_id<K: SyncedKind>(
    status: Option<&ProviderSyncStatus<K>>,
    provider: ProviderName,
) -> Option<&str> {
    status?
        .providers
        .iter()
        .find(|p| p.name == provider)
        .map(|p| p.id.as_str())
        .filter(|id| !id.is_empty())
}

/// What the leader keeps of a ContactGroup for provider sync.
#[derive(Clone, Debug)]
pub(super) struct GroupSyncEntry {
    uid: Box<str>,
    marks: SyncMarks,
    deleting: bool,
    segment: Option<Box<str>>,
    /// The Loops mailing list `spec.providers` names.
    loops_list: Option<Box<str>>,
    /// A Loops condition (True or False) was written for the current generation: a group its
    /// spec leaves out of Loops says so once.
    loops_reported: bool,
}

impl GroupSyncEntry {
    pub(super) fn of(group: &ContactGroup) -> Self {
        let status = group.status.as_ref();
        let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        Self {
            uid: group.metadata.uid.as_deref().unwrap_or_default().into(),
            marks: SyncMarks::read(&group.metadata, conditions, SyncedObject::Group),
            deleting: group.metadata.deletion_timestamp.is_some(),
            segment: resend_id(status).map(Into::into),
            loops_list: group
                .spec
                .providers
                .iter()
                .find(|p| p.name == crate::api::notification::GroupProviderName::Loops)
                .map(|p| p.id.as_str().into()),
            loops_reported: conditions.iter().any(|c| {
                c.type_ == sync::LOOPS_GROUP_READY
                    && c.observed_generation == group.metadata.generation
            }),
        }
    }
}

/// A Contact as provider sync reads it.
#[derive(Clone, Copy, Debug)]
pub struct ContactSync<'a> {
    /// Where it lives.
    pub key: NamedRef<'a>,
    /// `spec.email`.
    pub email: &'a str,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Sync condition and finalizer.
    pub marks: SyncMarks,
    /// Its `Unsubscribed` condition asks for removals not yet created.
    pub unsubscribe_pending: bool,
    /// Its `Suppressed` condition is True: the address hard-bounced or complained.
    pub suppressed: bool,
}

/// A ContactGroup as provider sync reads it.
#[derive(Clone, Copy, Debug)]
pub struct GroupSync<'a> {
    /// Where it lives.
    pub key: NamedRef<'a>,
    /// `spec.visibility`.
    pub visibility: Visibility,
    /// `metadata.uid`.
    pub uid: &'a str,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Sync condition and finalizer.
    pub marks: SyncMarks,
    /// The Resend segment id its status records.
    pub segment: Option<&'a str>,
    /// The Loops mailing list its spec names.
    pub loops_list: Option<&'a str>,
    /// A Loops condition was written for its current generation.
    pub loops_reported: bool,
}

/// A membership as provider sync reads it.
#[derive(Clone, Copy, Debug)]
pub struct MembershipSync<'a> {
    /// Where it lives.
    pub key: NamedRef<'a>,
    /// `spec.contactRef`.
    pub contact: NamedRef<'a>,
    /// `spec.contactGroupRef`.
    pub group: NamedRef<'a>,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Sync condition and finalizer.
    pub marks: SyncMarks,
}

impl Store {
    /// Whether any Contact with `email` (case-insensitive) is suppressed (leader only).
    pub fn email_suppressed(&self, email: &str) -> bool {
        self.contacts_by_email(email).any(|c| {
            self.contact_sync(c.key.namespace, c.key.name)
                .is_some_and(|s| s.suppressed)
        })
    }

    /// The Contact `namespace/name` as provider sync reads it (leader only).
    pub fn contact_sync(&self, namespace: &str, name: &str) -> Option<ContactSync<'_>> {
        let (key, row) = self.row(ViewKind::Contact, namespace, name)?;
        let Row::Contact(record) = row else {
            return None;
        };
        let extra = self.extras()?.contact_sync_fields(key)?;
        Some(ContactSync {
            key: self.named(key),
            email: self.symbols.resolve(record.email),
            deleting: extra.0,
            marks: extra.1,
            unsubscribe_pending: extra.2,
            suppressed: extra.3,
        })
    }

    /// The ContactGroup `namespace/name` as provider sync reads it (leader only).
    pub fn group_sync(&self, namespace: &str, name: &str) -> Option<GroupSync<'_>> {
        let (key, row) = self.row(ViewKind::ContactGroup, namespace, name)?;
        let Row::Group(record) = row else {
            return None;
        };
        let entry = self.extras()?.group_sync_entry(key)?;
        Some(GroupSync {
            key: self.named(key),
            visibility: record.visibility,
            uid: &entry.uid,
            deleting: entry.deleting,
            marks: entry.marks,
            segment: entry.segment.as_deref(),
            loops_list: entry.loops_list.as_deref(),
            loops_reported: entry.loops_reported,
        })
    }

    /// The membership `namespace/name` as provider sync reads it (leader only).
    pub fn membership_sync(&self, namespace: &str, name: &str) -> Option<MembershipSync<'_>> {
        self.extras()?;
        let (key, row) = self.row(ViewKind::Membership, namespace, name)?;
        let Row::Membership(pair, status) = row else {
            return None;
        };
        Some(MembershipSync {
            key: self.named(key),
            contact: self.named(pair.contact),
            group: self.named(pair.group),
            deleting: status.deleting,
            marks: status.sync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::PairStatus;
    use super::super::store::Row;

    /// The sync's marks live in padding: neither a membership's row nor its status grew.
    #[test]
    fn sync_marks_cost_no_bytes_per_row() {
        assert_eq!(std::mem::size_of::<PairStatus>(), 8);
        assert_eq!(std::mem::size_of::<Row>(), 32);
    }
}
