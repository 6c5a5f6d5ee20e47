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
use super::records::Pair;
use super::store::{NamedRef, Store, ViewKind};
use super::symbols::{Sym, Symbols};
use crate::api::notification::{
    ContactGroupMembershipRemovalSpec, ContactGroupMembershipRemovalStatus,
    ContactGroupMembershipSpec, ContactGroupMembershipStatus,
};
use crate::api::{
    Contact, ContactGroupEnrollmentPolicy, ContactGroupMembership, ContactGroupMembershipRemoval,
    User, UserInvitation,
};
use crate::api::{ObjectRef, iam::UserSpec};

/// Prefix of the annotations enrollment records on contacts; the only annotations kept.
pub const RECORD_PREFIX: &str = "policy.enrollment.notification.miloapis.com/";

/// What the leader knows of a Contact beyond its admission record.
#[derive(Clone, Copy, Debug)]
struct ContactExtra {
    /// `creationTimestamp` in Unix seconds, [`NO_TIME`] when unset.
    created: i64,
    given_name: Option<Sym>,
    family_name: Option<Sym>,
    deleting: bool,
}

/// A timestamp that is not set.
const NO_TIME: i64 = i64::MIN;

/// What the leader knows of a membership or removal beyond its pair.
#[derive(Clone, Debug)]
struct PairExtra {
    username: Option<Sym>,
    deleting: bool,
    generation: Option<i64>,
    /// The `Ready` condition (removals only; memberships' conditions belong to provider sync).
    ready: Option<Box<Condition>>,
}

/// What the leader knows of a User beyond its admission record.
#[derive(Clone, Copy, Debug)]
struct UserExtra {
    given_name: Option<Sym>,
    family_name: Option<Sym>,
    deleting: bool,
}

/// The controller fields of every kind, and the by-contact indexes controllers wake through.
#[derive(Clone, Default)]
pub(super) struct Extras {
    contacts: HashMap<Key, ContactExtra>,
    /// Enrollment records of contacts that have any: (annotation key, value) pairs.
    records: HashMap<Key, Box<[(Sym, Sym)]>>,
    memberships: HashMap<Key, PairExtra>,
    removals: HashMap<Key, PairExtra>,
    users: HashMap<Key, UserExtra>,
    policies: HashMap<Key, Arc<ContactGroupEnrollmentPolicy>>,
    invitations: HashMap<Key, Arc<UserInvitation>>,
    memberships_by_contact: MultiIndex<Key>,
    removals_by_contact: MultiIndex<Key>,
}

fn intern_opt(symbols: &mut Symbols, text: Option<&str>) -> Option<Sym> {
    text.filter(|t| !t.is_empty()).map(|t| symbols.intern(t))
}

fn release_opt(symbols: &mut Symbols, sym: Option<Sym>) {
    if let Some(sym) = sym {
        symbols.release(sym);
    }
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

/// Keeps of a whole object only what a controller reads: no managedFields, and no annotations
/// but `keep`.
fn slimmed<K: kube::Resource + Clone>(object: &K, keep: &[&str]) -> Arc<K> {
    let mut slim = object.clone();
    let meta = slim.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| keep.contains(&key.as_str()));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    Arc::new(slim)
}

impl Extras {
    pub(super) fn forget(&mut self, kind: ViewKind, key: Key, symbols: &mut Symbols) {
        match kind {
            ViewKind::Contact => {
                if let Some(old) = self.contacts.remove(&key) {
                    release_opt(symbols, old.given_name);
                    release_opt(symbols, old.family_name);
                }
                if let Some(records) = self.records.remove(&key) {
                    for (k, v) in records.iter() {
                        symbols.release(*k);
                        symbols.release(*v);
                    }
                }
            }
            ViewKind::Membership | ViewKind::Removal => {
                let table = if kind == ViewKind::Membership {
                    &mut self.memberships
                } else {
                    &mut self.removals
                };
                if let Some(old) = table.remove(&key) {
                    release_opt(symbols, old.username);
                }
            }
            ViewKind::User => {
                if let Some(old) = self.users.remove(&key) {
                    release_opt(symbols, old.given_name);
                    release_opt(symbols, old.family_name);
                }
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
        self.forget(ViewKind::Contact, key, symbols);
        let extra = ContactExtra {
            created: seconds(contact.metadata.creation_timestamp.as_ref()),
            given_name: intern_opt(symbols, contact.spec.given_name.as_deref()),
            family_name: intern_opt(symbols, contact.spec.family_name.as_deref()),
            deleting: deleting(&contact.metadata),
        };
        self.contacts.insert(key, extra);
        let records: Box<[(Sym, Sym)]> = contact
            .annotations()
            .iter()
            .filter(|(k, _)| k.starts_with(RECORD_PREFIX))
            .map(|(k, v)| (symbols.intern(k), symbols.intern(v)))
            .collect();
        if !records.is_empty() {
            self.records.insert(key, records);
        }
    }

    pub(super) fn apply_pair(
        &mut self,
        kind: ViewKind,
        key: Key,
        meta: &kube::api::ObjectMeta,
        username: Option<&str>,
        ready: Option<&Condition>,
        symbols: &mut Symbols,
    ) {
        self.forget(kind, key, symbols);
        let extra = PairExtra {
            username: intern_opt(symbols, username),
            deleting: deleting(meta),
            generation: meta.generation,
            ready: ready.map(|c| Box::new(c.clone())),
        };
        match kind {
            ViewKind::Membership => self.memberships.insert(key, extra),
            _ => self.removals.insert(key, extra),
        };
    }

    pub(super) fn apply_user(&mut self, key: Key, user: &User, symbols: &mut Symbols) {
        self.forget(ViewKind::User, key, symbols);
        let extra = UserExtra {
            given_name: intern_opt(symbols, user.spec.given_name.as_deref()),
            family_name: intern_opt(symbols, user.spec.family_name.as_deref()),
            deleting: deleting(&user.metadata),
        };
        self.users.insert(key, extra);
    }

    pub(super) fn apply_policy(&mut self, key: Key, policy: &ContactGroupEnrollmentPolicy) {
        self.policies.insert(key, slimmed(policy, &[]));
    }

    pub(super) fn apply_invitation(&mut self, key: Key, invitation: &UserInvitation) {
        self.invitations.insert(key, slimmed(invitation, &[]));
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

    fn extras(&self) -> Option<&Extras> {
        self.extras.as_deref()
    }

    fn pair_object_parts(
        &self,
        kind: ViewKind,
        namespace: &str,
        name: &str,
    ) -> Option<(ObjectRef, ObjectRef, &PairExtra)> {
        let (key, row) = self.row(kind, namespace, name)?;
        let pair = row.pair()?;
        let extras = self.extras()?;
        let table = match kind {
            ViewKind::Membership => &extras.memberships,
            _ => &extras.removals,
        };
        let extra = table.get(&key)?;
        let (contact, group) = self.pair_refs(pair);
        Some((contact, group, extra))
    }

    fn object_meta(&self, namespace: &str, name: &str, extra: &PairExtra) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            generation: extra.generation,
            deletion_timestamp: deletion_mark(extra.deleting),
            ..Default::default()
        }
    }

    fn resolve_opt(&self, sym: Option<Sym>) -> Option<&str> {
        sym.map(|s| self.symbols.resolve(s))
    }

    /// The membership `namespace/name` as its controller reads it: names, pair, deletion,
    /// `status.username`. `None` when it is not stored (or controller fields are off).
    pub fn membership_object(&self, namespace: &str, name: &str) -> Option<ContactGroupMembership> {
        let (contact_ref, contact_group_ref, extra) =
            self.pair_object_parts(ViewKind::Membership, namespace, name)?;
        let mut object = ContactGroupMembership::new(
            name,
            ContactGroupMembershipSpec {
                contact_ref,
                contact_group_ref,
            },
        );
        object.metadata = self.object_meta(namespace, name, extra);
        object.status = Some(ContactGroupMembershipStatus {
            username: self.resolve_opt(extra.username).map(str::to_owned),
            ..Default::default()
        });
        Some(object)
    }

    /// The removal `namespace/name` as its controller reads it: names, generation, pair,
    /// deletion, `status.username` and the `Ready` condition.
    pub fn removal_object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<ContactGroupMembershipRemoval> {
        let (contact_ref, contact_group_ref, extra) =
            self.pair_object_parts(ViewKind::Removal, namespace, name)?;
        let mut object = ContactGroupMembershipRemoval::new(
            name,
            ContactGroupMembershipRemovalSpec {
                contact_ref,
                contact_group_ref,
            },
        );
        object.metadata = self.object_meta(namespace, name, extra);
        object.status = Some(ContactGroupMembershipRemovalStatus {
            username: self.resolve_opt(extra.username).map(str::to_owned),
            conditions: extra.ready.iter().map(|c| (**c).clone()).collect(),
        });
        Some(object)
    }

    /// The User `name` as the usercontact controller reads it: name, uid, email, names, deletion.
    pub fn user_object(&self, name: &str) -> Option<User> {
        let found = self.user(name)?;
        let key = self.lookup_key("", name)?;
        let extra = self.extras()?.users.get(&key)?;
        let mut user = User::new(
            name,
            UserSpec {
                email: found.email.to_owned(),
                given_name: self.resolve_opt(extra.given_name).map(str::to_owned),
                family_name: self.resolve_opt(extra.family_name).map(str::to_owned),
            },
        );
        user.metadata.uid = Some(found.uid.to_owned()).filter(|u| !u.is_empty());
        user.metadata.deletion_timestamp = deletion_mark(extra.deleting);
        Some(user)
    }

    /// `spec.givenName` and `spec.familyName` of the Contact `namespace/name`.
    pub fn contact_names(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(Option<&str>, Option<&str>)> {
        let key = self.lookup_key(namespace, name)?;
        let extra = self.extras()?.contacts.get(&key)?;
        Some((
            self.resolve_opt(extra.given_name),
            self.resolve_opt(extra.family_name),
        ))
    }

    /// The ContactGroupEnrollmentPolicy `name`, slimmed.
    pub fn policy(&self, name: &str) -> Option<Arc<ContactGroupEnrollmentPolicy>> {
        let key = self.lookup_key("", name)?;
        self.extras()?.policies.get(&key).cloned()
    }

    /// Every ContactGroupEnrollmentPolicy, slimmed.
    pub fn policies(&self) -> Vec<Arc<ContactGroupEnrollmentPolicy>> {
        self.extras()
            .map(|e| e.policies.values().cloned().collect())
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
                    extras?
                        .records
                        .get(key)?
                        .iter()
                        .find(|(k, _)| *k == wanted)
                        .map(|(_, v)| self.symbols.resolve(*v))
                });
                Some(ContactFacts {
                    key: self.named(*key),
                    user_subject: subject_kind.is_some_and(|k| self.symbols.resolve(k) == "User"),
                    created: extra.map(|e| e.created).filter(|c| *c != NO_TIME),
                    deleting: extra.is_some_and(|e| e.deleting),
                    record,
                })
            })
    }

    /// The record annotation `record_key` of the contact `namespace/name`, when it has one.
    pub fn contact_record(&self, namespace: &str, name: &str, record_key: &str) -> Option<&str> {
        let key = self.lookup_key(namespace, name)?;
        let wanted = self.symbols.get(record_key)?;
        self.extras()?
            .records
            .get(&key)?
            .iter()
            .find(|(k, _)| *k == wanted)
            .map(|(_, v)| self.symbols.resolve(*v))
    }
}
