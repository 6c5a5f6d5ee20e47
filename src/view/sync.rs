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
use crate::api::common::{ProviderName, ProviderSyncStatus, SyncedKind, sync};
use crate::api::notification::Visibility;

/// What a sync condition and the finalizer say of one object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncMarks {
    /// The sync's condition is True for the current generation.
    pub synced: bool,
    /// The sync's finalizer is on the object.
    pub finalizer: bool,
}

impl SyncMarks {
    /// The marks of an object whose sync reports through `condition_type`.
    pub fn read(meta: &ObjectMeta, conditions: &[Condition], condition_type: &str) -> Self {
        let synced = conditions.iter().any(|c| {
            c.type_ == condition_type
                && c.status == "True"
                && c.observed_generation == meta.generation
        });
        let finalizer = meta
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == sync::FINALIZER));
        Self { synced, finalizer }
    }
}

/// Whether a Contact's `Unsubscribed` condition asks for removals not yet created.
pub fn unsubscribe_pending(conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| {
        c.type_ == sync::UNSUBSCRIBED && c.status == "True" && c.observed_generation.is_none()
    })
}

/// The id of this provider's entry in `status.providers`.
pub fn resend_id<K: SyncedKind>(status: Option<&ProviderSyncStatus<K>>) -> Option<&str> {
    status?
        .providers
        .iter()
        .find(|p| p.name == ProviderName::Resend)
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
}

impl GroupSyncEntry {
    pub(super) fn of(group: &ContactGroup) -> Self {
        let status = group.status.as_ref();
        let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        Self {
            uid: group.metadata.uid.as_deref().unwrap_or_default().into(),
            marks: SyncMarks::read(&group.metadata, conditions, sync::GROUP_READY),
            deleting: group.metadata.deletion_timestamp.is_some(),
            segment: resend_id(status).map(Into::into),
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
