//! Controller fields: what the leader's controllers read beyond what admission needs, kept only
//! once this replica leads (see [`Store::enable_controller_fields`]). Everything is slim: symbols
//! shared with the admission tables, a flag for "being deleted", a timestamp; the few kinds a
//! controller reads whole (policies, invitations) are kept without `managedFields` or annotations
//! nobody reads. Controllers rebuild a minimal typed object from these records for each reconcile
//! ([`Store::membership_object`] and friends), so no controller keeps objects of its own.

use std::sync::Arc;

use hashbrown::HashMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use super::index::{Key, MultiIndex};
use super::records::{Pair, PairStatus, names_digest};
use super::store::{NamedRef, Row, Store, ViewKind};
use super::symbols::{Sym, Symbols};
use super::sync::{GroupSyncEntry, SyncMarks, unsubscribe_pending};
use crate::api::iam::UserSpec;
use crate::api::notification::{
    ContactGroupMembershipRemovalSpec, ContactGroupMembershipRemovalStatus,
    ContactGroupMembershipSpec, ContactGroupMembershipStatus,
};
use crate::api::{
    Contact, ContactGroupEnrollmentPolicy, ContactGroupMembership, ContactGroupMembershipRemoval,
    User, UserInvitation,
};

/// Prefix of the annotations enrollment records on contacts; the only annotations kept.
pub const RECORD_PREFIX: &str = "policy.enrollment.notification.miloapis.com/";

/// The finalizer on a membership a policy created: while the membership stands it is the
/// policy's record of the contact, and before it goes the contact gets its record annotation.
pub const ENROLLMENT_FINALIZER: &str = "enrollment.notification.miloapis.com/record";

/// What the leader knows of a Contact beyond its admission record.
#[derive(Clone, Copy, Debug)]
struct ContactExtra {
    /// When the view first held it, in the view's own order (see `Extras::seq`).
    first_seen: u32,
    /// `creationTimestamp` in Unix seconds, [`NO_TIME`] when unset.
    created: i64,
    /// A digest of `spec.givenName` and `spec.familyName` (see [`names_digest`]).
    names: u64,
    deleting: bool,
    /// Provider sync's condition and finalizer (in what would be padding).
    sync: SyncMarks,
    /// Consent state from its conditions, as bits (see [`UNSUBSCRIBE_PENDING`],
    /// [`SUPPRESSED`]): one byte, so the record stays three words.
    consent: u8,
}

/// [`ContactExtra::consent`] bit: its `Unsubscribed` condition asks for removals not yet created.
const UNSUBSCRIBE_PENDING: u8 = 1;
/// [`ContactExtra::consent`] bit: its `Suppressed` condition is True, nothing is sent to it.
const SUPPRESSED: u8 = 2;
/// [`ContactExtra::consent`] bit: its `Unsubscribed` condition is True (pending or not): no
/// broadcast is sent to it.
const UNSUBSCRIBED: u8 = 4;

/// A timestamp that is not set.
const NO_TIME: i64 = i64::MIN;

/// What the leader knows of a removal beyond its row: what its `Ready` condition says.
#[derive(Clone, Debug)]
struct RemovalExtra {
    generation: Option<i64>,
    ready: Option<Box<Condition>>,
}

/// A policy, slimmed, and when the view first held it.
#[derive(Clone)]
struct PolicyEntry {
    policy: Arc<ContactGroupEnrollmentPolicy>,
    first_seen: u32,
    /// Whether it was first seen as it was created (a watch event), not in a relist.
    live: bool,
}

/// The controller fields of every kind, and the by-contact indexes controllers wake through.
#[derive(Clone, Default)]
pub(super) struct Extras {
    contacts: HashMap<Key, ContactExtra>,
    /// Enrollment records: (contact, annotation key) → value.
    records: HashMap<(Key, Sym), Sym>,
    /// The annotation keys records use (one per policy), with how many records use each, so a
    /// deleted contact's records are found without a scan.
    record_keys: HashMap<Sym, u32>,
    removals: HashMap<Key, RemovalExtra>,
    policies: HashMap<Key, PolicyEntry>,
    /// The view's own order of first sightings of contacts and policies: what decides which
    /// contacts of a policy's own second existed before it.
    seq: u32,
    /// Kinds being relisted: an object first seen in a relist was not seen as it was created.
    listing: Vec<ViewKind>,
    invitations: HashMap<Key, Arc<UserInvitation>>,
    memberships_by_contact: MultiIndex<Key>,
    removals_by_contact: MultiIndex<Key>,
    /// Provider sync's fields of ContactGroups (few, so kept as they are).
    groups: HashMap<Key, GroupSyncEntry>,
}

fn seconds(time: Option<&Time>) -> i64 {
    time.map_or(NO_TIME, |t| t.0.as_second())
}

fn deleting(meta: &kube::api::ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The instant materialized objects carry as `deletionTimestamp`: only its presence is read.
fn deletion_mark(deleting: bool) -> Option<Time> {
    deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH))
}

/// Keeps of a whole object only what a controller reads: no managedFields, no annotations.
fn slimmed<K: kube::Resource + Clone>(object: &K) -> Arc<K> {
    let mut slim = object.clone();
    let meta = slim.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    Arc::new(slim)
}

impl Extras {
    pub(super) fn forget(&mut self, kind: ViewKind, key: Key, symbols: &mut Symbols) {
        match kind {
            ViewKind::Contact => {
                self.contacts.remove(&key);
                let keys: Vec<Sym> = self.record_keys.keys().copied().collect();
                for record_key in keys {
                    if let Some(value) = self.records.remove(&(key, record_key)) {
                        symbols.release(value);
                        symbols.release(record_key);
                        self.unuse_record_key(record_key);
                    }
                }
            }
            ViewKind::Removal => {
                self.removals.remove(&key);
            }
            ViewKind::ContactGroup => {
                self.groups.remove(&key);
            }
            ViewKind::EnrollmentPolicy => {
                self.policies.remove(&key);
            }
            ViewKind::Invitation => {
                self.invitations.remove(&key);
            }
            _ => {}
        }
    }

    fn unuse_record_key(&mut self, record_key: Sym) {
        if let Some(count) = self.record_keys.get_mut(&record_key) {
            *count -= 1;
            if *count == 0 {
                self.record_keys.remove(&record_key);
            }
        }
    }

    /// Indexes a membership or removal by its contact (`add` false: unindexes it).
    pub(super) fn index_pair(&mut self, kind: ViewKind, key: Key, pair: Pair, add: bool) {
        let index = match kind {
            ViewKind::Membership => &mut self.memberships_by_contact,
            ViewKind::Removal => &mut self.removals_by_contact,
            _ => return,
        };
        if add {
            index.insert(pair.contact, key);
        } else {
            index.remove(&pair.contact, key);
        }
    }

    pub(super) fn apply_contact(&mut self, key: Key, contact: &Contact, symbols: &mut Symbols) {
        let first_seen = match self.contacts.get(&key) {
            Some(old) => old.first_seen,
            None => self.next_seq(),
        };
        self.forget(ViewKind::Contact, key, symbols);
        let conditions = contact
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let extra = ContactExtra {
            first_seen,
            created: seconds(contact.metadata.creation_timestamp.as_ref()),
            names: names_digest(
                contact.spec.given_name.as_deref(),
                contact.spec.family_name.as_deref(),
            ),
            deleting: deleting(&contact.metadata),
            sync: SyncMarks::read(
                &contact.metadata,
                conditions,
                crate::api::common::sync::SyncedObject::Contact,
            ),
            consent: {
                let suppressed = conditions
                    .iter()
                    .any(|c| c.type_ == crate::api::common::sync::SUPPRESSED && c.status == "True");
                let unsubscribed = conditions.iter().any(|c| {
                    c.type_ == crate::api::common::sync::UNSUBSCRIBED && c.status == "True"
                });
                (u8::from(unsubscribe_pending(conditions)) * UNSUBSCRIBE_PENDING)
                    | (u8::from(suppressed) * SUPPRESSED)
                    | (u8::from(unsubscribed) * UNSUBSCRIBED)
            },
        };
        self.contacts.insert(key, extra);
        for (k, v) in contact.annotations() {
            if k.starts_with(RECORD_PREFIX) {
                let record_key = symbols.intern(k);
                let value = symbols.intern(v);
                self.records.insert((key, record_key), value);
                *self.record_keys.entry(record_key).or_default() += 1;
            }
        }
    }

    pub(super) fn apply_removal(
        &mut self,
        key: Key,
        meta: &kube::api::ObjectMeta,
        ready: Option<&Condition>,
    ) {
        let extra = RemovalExtra {
            generation: meta.generation,
            ready: ready.map(|c| Box::new(c.clone())),
        };
        self.removals.insert(key, extra);
    }

    pub(super) fn apply_policy(&mut self, key: Key, policy: &ContactGroupEnrollmentPolicy) {
        let (first_seen, live) = match self.policies.get(&key) {
            Some(old) => (old.first_seen, old.live),
            None => {
                let first_seen = self.next_seq();
                let live = !self.listing.contains(&ViewKind::EnrollmentPolicy);
                // Once the numbers saturate they order nothing: as if seen in a relist.
                (first_seen, live && first_seen < u32::MAX)
            }
        };
        let entry = PolicyEntry {
            policy: slimmed(policy),
            first_seen,
            live,
        };
        self.policies.insert(key, entry);
    }

    /// The next first-sighting number. Four bytes per contact suffice: a process would have to
    /// see four billion new contacts and policies before they saturate, and a policy first seen
    /// after that counts as first seen in a relist.
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.saturating_add(1);
        self.seq
    }

    pub(super) fn set_listing(&mut self, kind: ViewKind, listing: bool) {
        self.listing.retain(|k| *k != kind);
        if listing {
            self.listing.push(kind);
        }
    }

    pub(super) fn apply_invitation(&mut self, key: Key, invitation: &UserInvitation) {
        self.invitations.insert(key, slimmed(invitation));
    }

    pub(super) fn apply_group(&mut self, key: Key, group: &crate::api::ContactGroup) {
        self.groups.insert(key, GroupSyncEntry::of(group));
    }

    /// A contact's deletion mark, sync marks and pending unsubscribe.
    pub(super) fn contact_sync_fields(&self, key: Key) -> Option<(bool, SyncMarks, bool, bool)> {
        let c = self.contacts.get(&key)?;
        Some((
            c.deleting,
            c.sync,
            c.consent & UNSUBSCRIBE_PENDING != 0,
            c.consent & SUPPRESSED != 0,
        ))
    }

    /// Whether a contact's `Unsubscribed` condition is True (whatever its removals).
    pub(super) fn contact_unsubscribed(&self, key: Key) -> bool {
        self.contacts
            .get(&key)
            .is_some_and(|c| c.consent & UNSUBSCRIBED != 0)
    }

    pub(super) fn group_sync_entry(&self, key: Key) -> Option<&GroupSyncEntry> {
        self.groups.get(&key)
    }
}

/// What enrollment reads of one contact.
#[derive(Clone, Copy, Debug)]
pub struct ContactFacts<'a> {
    /// Where the contact lives.
    pub key: NamedRef<'a>,
    /// Whether its subject is a User.
    pub user_subject: bool,
    /// `creationTimestamp` in Unix seconds, when set.
    pub created: Option<i64>,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// The value of the record annotation asked for, when the contact has it.
    pub record: Option<&'a str>,
    /// When the view first held it, in the view's order of first sightings.
    pub first_seen: u32,
}

impl Store {
    /// Starts keeping the controllers' fields (the leader's). Objects stored before carry none
    /// until they are applied again, which is why enabling them is followed by a relist.
    pub fn enable_controller_fields(&mut self) {
        if self.extras.is_none() {
            self.extras = Some(Box::default());
            // Index what is already stored, so the by-contact indexes are complete at once.
            let extras = self.extras.as_mut().expect("just set");
            for (kind, table) in [
                (
                    ViewKind::Membership,
                    &self.tables[ViewKind::Membership as usize],
                ),
                (ViewKind::Removal, &self.tables[ViewKind::Removal as usize]),
            ] {
                for (key, row) in table {
                    if let Some(pair) = row.pair() {
                        extras.index_pair(kind, *key, pair, true);
                    }
                }
            }
        }
    }

    /// Whether the controllers' fields are kept.
    pub fn has_controller_fields(&self) -> bool {
        self.extras.is_some()
    }

    pub(super) fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    /// The pair and the controllers' status of the membership or removal `namespace/name`,
    /// when the controllers' fields are kept.
    fn pair_row(
        &self,
        kind: ViewKind,
        namespace: &str,
        name: &str,
    ) -> Option<(Key, Pair, PairStatus)> {
        self.extras()?;
        match self.row(kind, namespace, name)? {
            (key, Row::Membership(pair, status)) | (key, Row::Removal(pair, status)) => {
                Some((key, *pair, *status))
            }
            _ => None,
        }
    }

    fn object_meta(namespace: &str, name: &str, deleting: bool) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            deletion_timestamp: deletion_mark(deleting),
            ..Default::default()
        }
    }

    fn resolve_opt(&self, sym: Option<Sym>) -> Option<&str> {
        sym.map(|s| self.symbols.resolve(s))
    }

    /// The membership `namespace/name` as its controller reads it: names, pair, deletion, the
    /// enrollment finalizer, `status.username`. `None` when it is not stored (or controller fields are off).
    pub fn membership_object(&self, namespace: &str, name: &str) -> Option<ContactGroupMembership> {
        let (_, pair, status) = self.pair_row(ViewKind::Membership, namespace, name)?;
        let (contact_ref, contact_group_ref) = self.pair_refs(pair);
        let mut object = ContactGroupMembership::new(
            name,
            ContactGroupMembershipSpec {
                contact_ref,
                contact_group_ref,
            },
        );
        object.metadata = Self::object_meta(namespace, name, status.deleting);
        if status.holds_record {
            object.metadata.finalizers = Some(vec![ENROLLMENT_FINALIZER.to_owned()]);
        }
        object.status = Some(ContactGroupMembershipStatus {
            username: self.resolve_opt(status.username).map(str::to_owned),
            ..Default::default()
        });
        Some(object)
    }

    /// Whether the membership `namespace/name` carries the enrollment finalizer: the policy that
    /// created it needs no record annotation while it stands.
    pub fn membership_holds_record(&self, namespace: &str, name: &str) -> bool {
        self.pair_row(ViewKind::Membership, namespace, name)
            .is_some_and(|(_, _, status)| status.holds_record)
    }

    /// The removal `namespace/name` as its controller reads it: names, generation, pair,
    /// deletion, `status.username` and the `Ready` condition.
    pub fn removal_object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<ContactGroupMembershipRemoval> {
        let (key, pair, status) = self.pair_row(ViewKind::Removal, namespace, name)?;
        let extra = self.extras()?.removals.get(&key)?;
        let (contact_ref, contact_group_ref) = self.pair_refs(pair);
        let mut object = ContactGroupMembershipRemoval::new(
            name,
            ContactGroupMembershipRemovalSpec {
                contact_ref,
                contact_group_ref,
            },
        );
        object.metadata = Self::object_meta(namespace, name, status.deleting);
        object.metadata.generation = extra.generation;
        object.status = Some(ContactGroupMembershipRemovalStatus {
            username: self.resolve_opt(status.username).map(str::to_owned),
            conditions: extra.ready.iter().map(|c| (**c).clone()).collect(),
        });
        Some(object)
    }

    /// The User `name` as the usercontact controller plans from it: name, uid, email, deletion
    /// (not its names, which only a write needs: that reads the User).
    pub fn user_object(&self, name: &str) -> Option<User> {
        self.extras()?;
        let Row::User(record) = self.row(ViewKind::User, "", name)?.1 else {
            return None;
        };
        let mut user = User::new(
            name,
            UserSpec {
                email: self.symbols.resolve(record.email).to_owned(),
                given_name: None,
                family_name: None,
            },
        );
        let uid = self.symbols.resolve(record.uid);
        user.metadata.uid = (!uid.is_empty()).then(|| uid.to_owned());
        user.metadata.deletion_timestamp = deletion_mark(record.deleting);
        Some(user)
    }

    /// The digest of the Contact `namespace/name`'s names (see [`names_digest`]).
    pub fn contact_names_digest(&self, namespace: &str, name: &str) -> Option<u64> {
        let key = self.lookup_key(namespace, name)?;
        Some(self.extras()?.contacts.get(&key)?.names)
    }

    /// The digest of the User `name`'s names (see [`names_digest`]), on the leader.
    pub fn user_names_digest(&self, name: &str) -> Option<u64> {
        self.extras()?;
        match self.row(ViewKind::User, "", name)?.1 {
            Row::User(record) => Some(record.names),
            _ => None,
        }
    }

    /// The ContactGroupEnrollmentPolicy `name`, slimmed.
    pub fn policy(&self, name: &str) -> Option<Arc<ContactGroupEnrollmentPolicy>> {
        let key = self.lookup_key("", name)?;
        self.extras()?.policies.get(&key).map(|e| e.policy.clone())
    }

    /// When the view first held the policy `name`, in the view's order of first sightings, and
    /// whether that was as it was created (not in a relist).
    pub fn policy_first_seen(&self, name: &str) -> Option<(u32, bool)> {
        let key = self.lookup_key("", name)?;
        let entry = self.extras()?.policies.get(&key)?;
        Some((entry.first_seen, entry.live))
    }

    /// Marks `kind` as being relisted (or done): objects first seen meanwhile were not seen as
    /// they were created.
    pub fn set_listing(&mut self, kind: ViewKind, listing: bool) {
        if let Some(extras) = self.extras.as_mut() {
            extras.set_listing(kind, listing);
        }
    }

    /// Every ContactGroupEnrollmentPolicy, slimmed.
    pub fn policies(&self) -> Vec<Arc<ContactGroupEnrollmentPolicy>> {
        self.extras()
            .map(|e| e.policies.values().map(|p| p.policy.clone()).collect())
            .unwrap_or_default()
    }

    /// The UserInvitation `namespace/name`, slimmed.
    pub fn invitation(&self, namespace: &str, name: &str) -> Option<Arc<UserInvitation>> {
        let key = self.lookup_key(namespace, name)?;
        self.extras()?.invitations.get(&key).cloned()
    }

    /// Every UserInvitation, slimmed.
    pub fn invitations(&self) -> Vec<Arc<UserInvitation>> {
        self.extras()
            .map(|e| e.invitations.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Memberships naming the contact `namespace/name`, wherever they live.
    pub fn memberships_of_contact(&self, namespace: &str, name: &str) -> Vec<NamedRef<'_>> {
        self.by_contact(namespace, name, |e| &e.memberships_by_contact)
    }

    /// Removals naming the contact `namespace/name`, wherever they live.
    pub fn removals_of_contact(&self, namespace: &str, name: &str) -> Vec<NamedRef<'_>> {
        self.by_contact(namespace, name, |e| &e.removals_by_contact)
    }

    fn by_contact(
        &self,
        namespace: &str,
        name: &str,
        index: impl Fn(&Extras) -> &MultiIndex<Key>,
    ) -> Vec<NamedRef<'_>> {
        match (self.lookup_key(namespace, name), self.extras()) {
            (Some(key), Some(extras)) => index(extras)
                .get(&key)
                .iter()
                .map(|k| self.named(*k))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Memberships (`kind` Membership) or removals (Removal) naming the group `namespace/name`:
    /// a scan, for the rare deletion of a group.
    pub fn naming_group(&self, kind: ViewKind, namespace: &str, name: &str) -> Vec<NamedRef<'_>> {
        let Some(group) = self.lookup_key(namespace, name) else {
            return Vec::new();
        };
        self.tables[kind as usize]
            .iter()
            .filter(|(_, row)| row.pair().is_some_and(|p| p.group == group))
            .map(|(key, _)| self.named(*key))
            .collect()
    }

    /// Every contact as enrollment reads it, with the value of the annotation `record_key`.
    pub fn enrollment_facts<'a>(
        &'a self,
        record_key: &str,
    ) -> impl Iterator<Item = ContactFacts<'a>> + 'a {
        let extras = self.extras();
        let record_sym = self.symbols.get(record_key);
        self.tables[ViewKind::Contact as usize]
            .iter()
            .filter_map(move |(key, row)| {
                let subject_kind = row.contact_subject_kind()?;
                let extra = extras.and_then(|e| e.contacts.get(key));
                let record = record_sym.and_then(|wanted| {
                    let value = extras?.records.get(&(*key, wanted))?;
                    Some(self.symbols.resolve(*value))
                });
                Some(ContactFacts {
                    key: self.named(*key),
                    user_subject: subject_kind.is_some_and(|k| self.symbols.resolve(k) == "User"),
                    created: extra.map(|e| e.created).filter(|c| *c != NO_TIME),
                    deleting: extra.is_some_and(|e| e.deleting),
                    record,
                    first_seen: extra.map_or(0, |e| e.first_seen),
                })
            })
    }

    /// The record annotation `record_key` of the contact `namespace/name`, when it has one.
    pub fn contact_record(&self, namespace: &str, name: &str, record_key: &str) -> Option<&str> {
        let key = self.lookup_key(namespace, name)?;
        let wanted = self.symbols.get(record_key)?;
        let value = self.extras()?.records.get(&(key, wanted))?;
        Some(self.symbols.resolve(*value))
    }
}

#[cfg(test)]
mod size_tests {
    /// A contact's sync marks and pending opt-out live in padding: its extra did not grow.
    #[test]
    fn contact_extra_stays_three_words() {
        assert_eq!(std::mem::size_of::<super::ContactExtra>(), 24);
    }
}
