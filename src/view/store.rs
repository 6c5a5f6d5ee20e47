//! The indexed store behind the cluster view: one table per kind keyed by namespace/name, and the
//! secondary indexes admission rules look up. All lookups are O(1) or O(matches).

use hashbrown::HashMap;
use kube::ResourceExt;

use super::extras::Extras;
pub use super::found::{ContactView, GroupView, NamedRef, SubjectView, UserView};
use super::index::{Key, MultiIndex};
use super::records::{
    ContactRecord, GroupRecord, InvitationRecord, NEVER, Pair, PairStatus, PolicyRecord,
    SubjectRecord, TemplateVariableRecord, UserRecord, names_digest,
};
use super::symbols::{Sym, Symbols};
use super::sync::SyncMarks;
use crate::api::common::ObjectRef;
use crate::api::iam::ORGANIZATION_MEMBERSHIP_LABEL;
use crate::api::notification::Visibility;
use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, User, UserInvitation,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

/// The kinds the view indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewKind {
    /// `notification.miloapis.com` Contact.
    Contact,
    /// `notification.miloapis.com` ContactGroup.
    ContactGroup,
    /// `notification.miloapis.com` ContactGroupMembership.
    Membership,
    /// `notification.miloapis.com` ContactGroupMembershipRemoval.
    Removal,
    /// `notification.miloapis.com` ContactGroupEnrollmentPolicy.
    EnrollmentPolicy,
    /// `iam.miloapis.com` User.
    User,
    /// `iam.miloapis.com` UserInvitation.
    Invitation,
    /// `rbac.authorization.k8s.io` Role (names only: invitations name roles).
    Role,
    /// `rbac.authorization.k8s.io` ClusterRole (names only).
    ClusterRole,
    /// `rbac.authorization.k8s.io` RoleBinding labelled as an organization membership.
    MemberBinding,
    /// `notification.miloapis.com` Email (its delivery state and provider id).
    Email,
    /// `notification.miloapis.com` EmailTemplate (declared variables only, not the bodies).
    EmailTemplate,
    /// `notification.miloapis.com` EmailBroadcast (when it is due and whether it is done).
    EmailBroadcast,
}

impl ViewKind {
    /// Every indexed kind, so sync tracking can wait for all of them.
    pub const ALL: [ViewKind; 13] = [
        ViewKind::Contact,
        ViewKind::ContactGroup,
        ViewKind::Membership,
        ViewKind::Removal,
        ViewKind::EnrollmentPolicy,
        ViewKind::User,
        ViewKind::Invitation,
        ViewKind::Role,
        ViewKind::ClusterRole,
        ViewKind::MemberBinding,
        ViewKind::Email,
        ViewKind::EmailTemplate,
        ViewKind::EmailBroadcast,
    ];

    /// Whether the leader keeps fields of this kind that admission does not read, so that
    /// gaining leadership relists it.
    pub fn has_controller_fields(self) -> bool {
        matches!(
            self,
            ViewKind::Contact
                | ViewKind::ContactGroup
                | ViewKind::Membership
                | ViewKind::Removal
                | ViewKind::EnrollmentPolicy
                | ViewKind::User
                | ViewKind::Invitation
        ) || matches!(self, ViewKind::Email | ViewKind::EmailBroadcast)
    }

    /// The Kubernetes kind name, for logs and metrics.
    pub fn kind_name(self) -> &'static str {
        match self {
            ViewKind::Contact => "Contact",
            ViewKind::ContactGroup => "ContactGroup",
            ViewKind::Membership => "ContactGroupMembership",
            ViewKind::Removal => "ContactGroupMembershipRemoval",
            ViewKind::EnrollmentPolicy => "ContactGroupEnrollmentPolicy",
            ViewKind::User => "User",
            ViewKind::Invitation => "UserInvitation",
            ViewKind::Role => "Role",
            ViewKind::ClusterRole => "ClusterRole",
            ViewKind::MemberBinding => "RoleBinding",
            ViewKind::Email => "Email",
            ViewKind::EmailTemplate => "EmailTemplate",
            ViewKind::EmailBroadcast => "EmailBroadcast",
        }
    }
}

/// A stored object of any kind: lets updates and deletes unindex what was there before.
#[derive(Clone, Debug)]
pub(super) enum Row {
    Contact(ContactRecord),
    Group(GroupRecord),
    Membership(Pair, PairStatus),
    Removal(Pair, PairStatus),
    Policy(PolicyRecord),
    User(UserRecord),
    Invitation(InvitationRecord),
    Role,
    MemberBinding(Box<[Sym]>),
    Email(super::emails::EmailRecord),
    EmailTemplate(Box<[TemplateVariableRecord]>),
    EmailBroadcast(super::broadcasts::BroadcastRecord),
}

#[derive(Clone, Default)]
pub(super) struct Indexes {
    pub(super) contacts_by_email: MultiIndex<Sym>,
    pub(super) contacts_by_user: MultiIndex<Sym>,
    pub(super) groups_by_identity: MultiIndex<(Sym, Sym, Visibility)>,
    pub(super) memberships_by_pair: MultiIndex<Pair>,
    pub(super) removals_by_pair: MultiIndex<Pair>,
    pub(super) users_by_email: MultiIndex<Sym>,
    pub(super) invitations_by_email_org: MultiIndex<(Sym, Sym)>,
    pub(super) members_by_namespace_user: MultiIndex<(Sym, Sym)>,
    pub(super) emails_by_provider_id: MultiIndex<Sym>,
}

impl Indexes {
    fn update(&mut self, key: Key, row: &Row, add: bool) {
        fn apply<K: std::hash::Hash + Eq>(ix: &mut MultiIndex<K>, k: K, key: Key, add: bool) {
            if add {
                ix.insert(k, key)
            } else {
                ix.remove(&k, key)
            }
        }
        match row {
            Row::Contact(c) => {
                apply(&mut self.contacts_by_email, c.email_key, key, add);
                if let Some(s) = c.subject {
                    apply(&mut self.contacts_by_user, s.name, key, add);
                }
            }
            Row::Group(g) => apply(
                &mut self.groups_by_identity,
                (key.namespace, g.display_name, g.visibility),
                key,
                add,
            ),
            Row::Membership(p, _) => apply(&mut self.memberships_by_pair, *p, key, add),
            Row::Removal(p, _) => apply(&mut self.removals_by_pair, *p, key, add),
            Row::Policy(_) | Row::Role => {}
            Row::MemberBinding(users) => {
                for user in users {
                    apply(
                        &mut self.members_by_namespace_user,
                        (key.namespace, *user),
                        key,
                        add,
                    );
                }
            }
            Row::User(u) => apply(&mut self.users_by_email, u.email_key, key, add),
            Row::Invitation(i) => apply(
                &mut self.invitations_by_email_org,
                (i.email_key, i.organization),
                key,
                add,
            ),
            Row::Email(e) => {
                if let Some(id) = e.provider_id {
                    apply(&mut self.emails_by_provider_id, id, key, add);
                }
            }
            Row::EmailTemplate(_) | Row::EmailBroadcast(_) => {}
        }
    }
}

impl Row {
    /// The (contact, group) pair of a membership or removal.
    pub(super) fn pair(&self) -> Option<Pair> {
        match self {
            Row::Membership(p, _) | Row::Removal(p, _) => Some(*p),
            _ => None,
        }
    }

    /// A contact's subject kind: `None` for other rows, `Some(None)` for a contact without one.
    pub(super) fn contact_subject_kind(&self) -> Option<Option<Sym>> {
        match self {
            Row::Contact(c) => Some(c.subject.map(|s| s.kind)),
            _ => None,
        }
    }

    fn for_each_symbol(&self, f: &mut impl FnMut(Sym)) {
        let mut each = |syms: &[Sym]| syms.iter().copied().for_each(&mut *f);
        match self {
            Row::Contact(c) => {
                each(&[c.email, c.email_key]);
                if let Some(s) = c.subject {
                    each(&[s.api_group, s.kind, s.name, s.namespace]);
                }
            }
            Row::Group(g) => {
                each(&[g.display_name]);
                each(g.description.as_slice());
            }
            Row::Membership(p, status) | Row::Removal(p, status) => {
                each(&[
                    p.contact.namespace,
                    p.contact.name,
                    p.group.namespace,
                    p.group.name,
                ]);
                each(status.username.as_slice());
            }
            Row::Policy(p) => each(&[p.group.namespace, p.group.name]),
            Row::User(u) => each(&[u.email, u.email_key, u.uid]),
            Row::Invitation(i) => each(&[i.email_key, i.organization]),
            Row::Role => {}
            Row::MemberBinding(users) => each(users),
            Row::Email(e) => each(e.provider_id.as_slice()),
            Row::EmailTemplate(variables) => variables.iter().for_each(|v| f(v.name)),
            Row::EmailBroadcast(_) => {}
        }
    }
}

/// The objects of the cluster, as admission rules see them, and (on the leader) as controllers
/// see them.
#[derive(Clone)]
pub struct Store {
    pub(super) symbols: Symbols,
    pub(super) tables: [HashMap<Key, Row>; ViewKind::ALL.len()],
    pub(super) indexes: Indexes,
    /// The controllers' fields, kept only when enabled (see [`Store::enable_controller_fields`]).
    pub(super) extras: Option<Box<Extras>>,
}

/// A store with the controllers' fields: what tests and the offline commands use.
impl Default for Store {
    fn default() -> Self {
        let mut store = Self::admission_only();
        store.enable_controller_fields();
        store
    }
}

impl Store {
    /// A store keeping only what admission reads: what every replica keeps until it leads.
    pub fn admission_only() -> Self {
        Self {
            symbols: Symbols::default(),
            tables: Default::default(),
            indexes: Indexes::default(),
            extras: None,
        }
    }

    pub(super) fn key(&mut self, namespace: &str, name: &str) -> Key {
        Key {
            namespace: self.symbols.intern(namespace),
            name: self.symbols.intern(name),
        }
    }

    pub(super) fn lookup_key(&self, namespace: &str, name: &str) -> Option<Key> {
        Some(Key {
            namespace: self.symbols.get(namespace)?,
            name: self.symbols.get(name)?,
        })
    }

    fn email_syms(&mut self, email: &str) -> (Sym, Sym) {
        (
            self.symbols.intern(email),
            self.symbols.intern(&email.to_lowercase()),
        )
    }

    pub(super) fn upsert(&mut self, kind: ViewKind, key: Key, row: Row) {
        let new_pair = row.pair();
        let previous = self.tables[kind as usize].insert(key, row.clone());
        if let Some(old) = previous {
            self.indexes.update(key, &old, false);
            if let (Some(extras), Some(pair)) = (self.extras.as_mut(), old.pair()) {
                extras.index_pair(kind, key, pair, false);
            }
            self.release(key, &old);
        }
        self.indexes.update(key, &row, true);
        if let (Some(extras), Some(pair)) = (self.extras.as_mut(), new_pair) {
            extras.index_pair(kind, key, pair, true);
        }
    }

    fn release(&mut self, key: Key, row: &Row) {
        self.symbols.release(key.namespace);
        self.symbols.release(key.name);
        row.for_each_symbol(&mut |s| self.symbols.release(s));
    }

    /// Stores or replaces a Contact.
    pub fn apply_contact(&mut self, contact: &Contact) {
        let key = self.key(
            &contact.namespace().unwrap_or_default(),
            &contact.name_any(),
        );
        let (email, email_key) = self.email_syms(&contact.spec.email);
        let subject = contact.spec.subject.as_ref().map(|s| SubjectRecord {
            api_group: self.symbols.intern(&s.api_group),
            kind: self.symbols.intern(&s.kind),
            name: self.symbols.intern(&s.name),
            namespace: self
                .symbols
                .intern(s.namespace.as_deref().unwrap_or_default()),
        });
        self.upsert(
            ViewKind::Contact,
            key,
            Row::Contact(ContactRecord {
                email,
                email_key,
                subject,
                uid: super::records::uid_digest(
                    contact.metadata.uid.as_deref().unwrap_or_default(),
                ),
            }),
        );
        if let Some(extras) = self.extras.as_mut() {
            extras.apply_contact(key, contact, &mut self.symbols);
        }
    }

    /// Stores or replaces a ContactGroup.
    pub fn apply_group(&mut self, group: &ContactGroup) {
        let key = self.key(&group.namespace().unwrap_or_default(), &group.name_any());
        let display_name = self.symbols.intern(&group.spec.display_name);
        let description = self.intern_present(group.spec.description.as_deref());
        let row = Row::Group(GroupRecord {
            display_name,
            visibility: group.spec.visibility,
            description,
        });
        self.upsert(ViewKind::ContactGroup, key, row);
        if let Some(extras) = self.extras.as_mut() {
            extras.apply_group(key, group);
        }
    }

    fn pair(&mut self, contact: &ObjectRef, group: &ObjectRef) -> Pair {
        Pair {
            contact: self.key(&contact.namespace, &contact.name),
            group: self.key(&group.namespace, &group.name),
        }
    }

    /// Stores or replaces a ContactGroupMembership.
    pub fn apply_membership(&mut self, m: &ContactGroupMembership) {
        let key = self.key(&m.namespace().unwrap_or_default(), &m.name_any());
        let pair = self.pair(&m.spec.contact_ref, &m.spec.contact_group_ref);
        let username = m.status.as_ref().and_then(|s| s.username.as_deref());
        let conditions = m.status.as_ref().map(|s| s.conditions.as_slice());
        let mut status = self.pair_status(&m.metadata, username);
        if self.extras.is_some() {
            status.sync = SyncMarks::read(
                &m.metadata,
                conditions.unwrap_or_default(),
                crate::api::common::sync::SyncedObject::Membership,
            );
        }
        self.upsert(ViewKind::Membership, key, Row::Membership(pair, status));
    }

    /// Stores or replaces a ContactGroupMembershipRemoval.
    pub fn apply_removal(&mut self, r: &ContactGroupMembershipRemoval) {
        let key = self.key(&r.namespace().unwrap_or_default(), &r.name_any());
        let pair = self.pair(&r.spec.contact_ref, &r.spec.contact_group_ref);
        let status = r.status.as_ref();
        let username = status.and_then(|s| s.username.as_deref());
        let mut pair_status = self.pair_status(&r.metadata, username);
        pair_status.by_person = crate::api::consent::made_by_person(
            r.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::consent::SOURCE_ANNOTATION))
                .map(String::as_str),
        );
        self.upsert(ViewKind::Removal, key, Row::Removal(pair, pair_status));
        if let Some(extras) = self.extras.as_mut() {
            let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            extras.apply_removal(key, &r.metadata, ready);
        }
    }

    /// The controllers' part of a membership or removal row: empty unless they are kept.
    fn pair_status(&mut self, meta: &kube::api::ObjectMeta, username: Option<&str>) -> PairStatus {
        if self.extras.is_none() {
            return PairStatus::default();
        }
        PairStatus {
            username: self.intern_present(username),
            deleting: meta.deletion_timestamp.is_some(),
            holds_record: meta
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == super::ENROLLMENT_FINALIZER)),
            sync: SyncMarks::default(),
            by_person: false,
        }
    }

    /// Interns `text` unless it is absent or empty.
    pub(super) fn intern_present(&mut self, text: Option<&str>) -> Option<Sym> {
        text.filter(|t| !t.is_empty())
            .map(|t| self.symbols.intern(t))
    }

    /// Stores or replaces a ContactGroupEnrollmentPolicy.
    pub fn apply_policy(&mut self, p: &ContactGroupEnrollmentPolicy) {
        let key = self.key("", &p.name_any());
        let group = self.key(
            &p.spec.contact_group_ref.namespace,
            &p.spec.contact_group_ref.name,
        );
        self.upsert(
            ViewKind::EnrollmentPolicy,
            key,
            Row::Policy(PolicyRecord { group }),
        );
        if let Some(extras) = self.extras.as_mut() {
            extras.apply_policy(key, p);
        }
    }

    /// Stores or replaces a User.
    pub fn apply_user(&mut self, u: &User) {
        let key = self.key("", &u.name_any());
        let (email, email_key) = self.email_syms(&u.spec.email);
        let uid = self
            .symbols
            .intern(u.metadata.uid.as_deref().unwrap_or_default());
        let leader = self.extras.is_some();
        let row = Row::User(UserRecord {
            email,
            email_key,
            uid,
            names: if leader {
                names_digest(u.spec.given_name.as_deref(), u.spec.family_name.as_deref())
            } else {
                0
            },
            deleting: leader && u.metadata.deletion_timestamp.is_some(),
        });
        self.upsert(ViewKind::User, key, row);
    }

    /// Stores or replaces a UserInvitation.
    pub fn apply_invitation(&mut self, i: &UserInvitation) {
        let key = self.key(&i.namespace().unwrap_or_default(), &i.name_any());
        let email_key = self.symbols.intern(&i.spec.email.to_lowercase());
        let organization = self.symbols.intern(&i.spec.organization_ref.name);
        let expires_at = i
            .spec
            .expiration_date
            .as_ref()
            .map_or(NEVER, |t| t.0.as_second());
        let row = InvitationRecord {
            email_key,
            organization,
            state: i.spec.state,
            expires_at,
        };
        self.upsert(ViewKind::Invitation, key, Row::Invitation(row));
        if let Some(extras) = self.extras.as_mut() {
            extras.apply_invitation(key, i);
        }
    }

    /// Stores or replaces an RBAC Role.
    pub fn apply_role(&mut self, role: &Role) {
        let key = self.key(&role.namespace().unwrap_or_default(), &role.name_any());
        self.upsert(ViewKind::Role, key, Row::Role);
    }

    /// Stores or replaces an RBAC ClusterRole.
    pub fn apply_cluster_role(&mut self, role: &ClusterRole) {
        let key = self.key("", &role.name_any());
        self.upsert(ViewKind::ClusterRole, key, Row::Role);
    }

    /// Stores a RoleBinding labelled as an organization membership (and forgets one that lost the
    /// label); other bindings are not the view's business.
    pub fn apply_role_binding(&mut self, binding: &RoleBinding) {
        let (namespace, name) = (binding.namespace().unwrap_or_default(), binding.name_any());
        if !binding.labels().contains_key(ORGANIZATION_MEMBERSHIP_LABEL) {
            self.delete(ViewKind::MemberBinding, &namespace, &name);
            return;
        }
        let key = self.key(&namespace, &name);
        let users: Box<[Sym]> = binding
            .subjects
            .iter()
            .flatten()
            .filter(|s| s.kind == "User")
            .map(|s| self.symbols.intern(&s.name))
            .collect();
        self.upsert(ViewKind::MemberBinding, key, Row::MemberBinding(users));
    }

    /// Forgets an object; a no-op when it is not stored.
    pub fn delete(&mut self, kind: ViewKind, namespace: &str, name: &str) {
        if let Some(key) = self.lookup_key(namespace, name) {
            self.delete_key(kind, key);
        }
    }

    /// The key of the stored object `namespace/name` of `kind`, for relist bookkeeping: eight
    /// bytes where two strings would take dozens.
    pub fn stored_key(&self, kind: ViewKind, namespace: &str, name: &str) -> Option<Key> {
        let key = self.lookup_key(namespace, name)?;
        self.tables[kind as usize].contains_key(&key).then_some(key)
    }

    /// Forgets every object of `kind` whose key is not in `keep` (a relist's pruning); how many.
    pub fn retain_keys(&mut self, kind: ViewKind, keep: &hashbrown::HashSet<Key>) -> usize {
        let gone: Vec<Key> = self.tables[kind as usize]
            .keys()
            .filter(|k| !keep.contains(*k))
            .copied()
            .collect();
        for key in &gone {
            self.delete_key(kind, *key);
        }
        gone.len()
    }

    fn delete_key(&mut self, kind: ViewKind, key: Key) {
        let Some(row) = self.tables[kind as usize].remove(&key) else {
            return;
        };
        self.indexes.update(key, &row, false);
        if let Some(extras) = self.extras.as_mut() {
            if let Some(pair) = row.pair() {
                extras.index_pair(kind, key, pair, false);
            }
            extras.forget(kind, key, &mut self.symbols);
        }
        self.release(key, &row);
    }

    /// Every stored object of a kind, for relist pruning.
    pub fn names(&self, kind: ViewKind) -> Vec<(String, String)> {
        self.tables[kind as usize]
            .keys()
            .map(|k| {
                let r = self.named(*k);
                (r.namespace.to_owned(), r.name.to_owned())
            })
            .collect()
    }

    /// How many objects of a kind are stored.
    pub fn len(&self, kind: ViewKind) -> usize {
        self.tables[kind as usize].len()
    }

    /// How many distinct strings the view holds.
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    pub(super) fn named(&self, key: Key) -> NamedRef<'_> {
        NamedRef {
            namespace: self.symbols.resolve(key.namespace),
            name: self.symbols.resolve(key.name),
        }
    }

    pub(super) fn row(&self, kind: ViewKind, namespace: &str, name: &str) -> Option<(Key, &Row)> {
        self.row_at(kind, self.lookup_key(namespace, name)?)
    }

    /// The row of `kind` at a key already resolved (see `lookups::PairLookup`).
    pub(super) fn row_at(&self, kind: ViewKind, key: Key) -> Option<(Key, &Row)> {
        self.tables[kind as usize].get(&key).map(|row| (key, row))
    }
}
