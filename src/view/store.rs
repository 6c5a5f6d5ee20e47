//! The indexed store behind the cluster view: one table per kind keyed by namespace/name, and the
//! secondary indexes admission rules look up. All lookups are O(1) or O(matches).

use hashbrown::HashMap;
use kube::ResourceExt;

pub use super::found::{ContactView, GroupView, NamedRef, SubjectView, UserView};
use super::index::{Key, MultiIndex};
use super::records::{
    ContactRecord, GroupRecord, InvitationRecord, NEVER, Pair, PolicyRecord, SubjectRecord,
    UserRecord,
};
use super::symbols::{Sym, Symbols};
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
}

impl ViewKind {
    /// Every indexed kind, so sync tracking can wait for all of them.
    pub const ALL: [ViewKind; 10] = [
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
    ];

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
        }
    }
}

/// A stored object of any kind: lets updates and deletes unindex what was there before.
#[derive(Clone, Debug)]
enum Row {
    Contact(ContactRecord),
    Group(GroupRecord),
    Membership(Pair),
    Removal(Pair),
    Policy(PolicyRecord),
    User(UserRecord),
    Invitation(InvitationRecord),
    Role,
    MemberBinding(Box<[Sym]>),
}

#[derive(Default)]
struct Indexes {
    contacts_by_email: MultiIndex<Sym>,
    contacts_by_user: MultiIndex<Sym>,
    groups_by_identity: MultiIndex<(Sym, Sym, Visibility)>,
    memberships_by_pair: MultiIndex<Pair>,
    removals_by_pair: MultiIndex<Pair>,
    users_by_email: MultiIndex<Sym>,
    invitations_by_email_org: MultiIndex<(Sym, Sym)>,
    members_by_namespace_user: MultiIndex<(Sym, Sym)>,
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
            Row::Membership(p) => apply(&mut self.memberships_by_pair, *p, key, add),
            Row::Removal(p) => apply(&mut self.removals_by_pair, *p, key, add),
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
        }
    }
}

impl Row {
    fn for_each_symbol(&self, f: &mut impl FnMut(Sym)) {
        let mut each = |syms: &[Sym]| syms.iter().copied().for_each(&mut *f);
        match self {
            Row::Contact(c) => {
                each(&[c.email, c.email_key]);
                if let Some(s) = c.subject {
                    each(&[s.api_group, s.kind, s.name, s.namespace]);
                }
            }
            Row::Group(g) => each(&[g.display_name]),
            Row::Membership(p) | Row::Removal(p) => each(&[
                p.contact.namespace,
                p.contact.name,
                p.group.namespace,
                p.group.name,
            ]),
            Row::Policy(p) => each(&[p.group.namespace, p.group.name]),
            Row::User(u) => each(&[u.email, u.email_key, u.uid]),
            Row::Invitation(i) => each(&[i.email_key, i.organization]),
            Row::Role => {}
            Row::MemberBinding(users) => each(users),
        }
    }
}

/// The objects of the cluster, as admission rules see them.
#[derive(Default)]
pub struct Store {
    symbols: Symbols,
    tables: [HashMap<Key, Row>; ViewKind::ALL.len()],
    indexes: Indexes,
}

impl Store {
    fn key(&mut self, namespace: &str, name: &str) -> Key {
        Key {
            namespace: self.symbols.intern(namespace),
            name: self.symbols.intern(name),
        }
    }

    fn lookup_key(&self, namespace: &str, name: &str) -> Option<Key> {
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

    fn upsert(&mut self, kind: ViewKind, key: Key, row: Row) {
        let previous = self.tables[kind as usize].insert(key, row.clone());
        if let Some(old) = previous {
            self.indexes.update(key, &old, false);
            self.release(key, &old);
        }
        self.indexes.update(key, &row, true);
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
            }),
        );
    }

    /// Stores or replaces a ContactGroup.
    pub fn apply_group(&mut self, group: &ContactGroup) {
        let key = self.key(&group.namespace().unwrap_or_default(), &group.name_any());
        let display_name = self.symbols.intern(&group.spec.display_name);
        let row = Row::Group(GroupRecord {
            display_name,
            visibility: group.spec.visibility,
        });
        self.upsert(ViewKind::ContactGroup, key, row);
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
        self.upsert(ViewKind::Membership, key, Row::Membership(pair));
    }

    /// Stores or replaces a ContactGroupMembershipRemoval.
    pub fn apply_removal(&mut self, r: &ContactGroupMembershipRemoval) {
        let key = self.key(&r.namespace().unwrap_or_default(), &r.name_any());
        let pair = self.pair(&r.spec.contact_ref, &r.spec.contact_group_ref);
        self.upsert(ViewKind::Removal, key, Row::Removal(pair));
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
    }

    /// Stores or replaces a User.
    pub fn apply_user(&mut self, u: &User) {
        let key = self.key("", &u.name_any());
        let (email, email_key) = self.email_syms(&u.spec.email);
        let uid = self
            .symbols
            .intern(u.metadata.uid.as_deref().unwrap_or_default());
        let row = Row::User(UserRecord {
            email,
            email_key,
            uid,
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
        let Some(key) = self.lookup_key(namespace, name) else {
            return;
        };
        let Some(row) = self.tables[kind as usize].remove(&key) else {
            return;
        };
        self.indexes.update(key, &row, false);
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

    fn named(&self, key: Key) -> NamedRef<'_> {
        NamedRef {
            namespace: self.symbols.resolve(key.namespace),
            name: self.symbols.resolve(key.name),
        }
    }

    fn row(&self, kind: ViewKind, namespace: &str, name: &str) -> Option<(Key, &Row)> {
        let key = self.lookup_key(namespace, name)?;
        self.tables[kind as usize].get(&key).map(|row| (key, row))
    }

    fn contact_view(&self, key: Key, c: &ContactRecord) -> ContactView<'_> {
        let s = &self.symbols;
        ContactView {
            key: self.named(key),
            email: s.resolve(c.email),
            subject: c.subject.map(|sub| SubjectView {
                api_group: s.resolve(sub.api_group),
                kind: s.resolve(sub.kind),
                name: s.resolve(sub.name),
                namespace: s.resolve(sub.namespace),
            }),
        }
    }

    /// The Contact `namespace/name`.
    pub fn contact(&self, namespace: &str, name: &str) -> Option<ContactView<'_>> {
        match self.row(ViewKind::Contact, namespace, name)? {
            (key, Row::Contact(c)) => Some(self.contact_view(key, c)),
            _ => None,
        }
    }

    fn contacts_at<'a>(&'a self, keys: &'a [Key]) -> impl Iterator<Item = ContactView<'a>> + 'a {
        let table = &self.tables[ViewKind::Contact as usize];
        keys.iter().filter_map(move |k| match table.get(k)? {
            Row::Contact(c) => Some(self.contact_view(*k, c)),
            _ => None,
        })
    }

    /// Contacts whose email equals `email`, compared case-insensitively.
    pub fn contacts_by_email<'a>(
        &'a self,
        email: &str,
    ) -> impl Iterator<Item = ContactView<'a>> + 'a {
        let keys = match self.symbols.get(&email.to_lowercase()) {
            Some(sym) => self.indexes.contacts_by_email.get(&sym),
            None => &[],
        };
        self.contacts_at(keys)
    }

    /// Contacts whose subject names the User `user`.
    pub fn contacts_by_user<'a>(
        &'a self,
        user: &str,
    ) -> impl Iterator<Item = ContactView<'a>> + 'a {
        let keys = match self.symbols.get(user) {
            Some(sym) => self.indexes.contacts_by_user.get(&sym),
            None => &[],
        };
        self.contacts_at(keys)
            .filter(move |c| c.subject.is_some_and(|s| s.kind == "User"))
    }

    /// The ContactGroup `namespace/name`.
    pub fn group(&self, namespace: &str, name: &str) -> Option<GroupView<'_>> {
        match self.row(ViewKind::ContactGroup, namespace, name)? {
            (key, Row::Group(g)) => Some(GroupView {
                key: self.named(key),
                display_name: self.symbols.resolve(g.display_name),
                visibility: g.visibility,
            }),
            _ => None,
        }
    }

    /// Groups in `namespace` with this display name and visibility.
    pub fn groups_by_identity(
        &self,
        namespace: &str,
        display_name: &str,
        visibility: Visibility,
    ) -> Vec<NamedRef<'_>> {
        let (Some(ns), Some(dn)) = (self.symbols.get(namespace), self.symbols.get(display_name))
        else {
            return Vec::new();
        };
        self.resolve_all(self.indexes.groups_by_identity.get(&(ns, dn, visibility)))
    }

    fn lookup_pair(&self, contact: &ObjectRef, group: &ObjectRef) -> Option<Pair> {
        Some(Pair {
            contact: self.lookup_key(&contact.namespace, &contact.name)?,
            group: self.lookup_key(&group.namespace, &group.name)?,
        })
    }

    fn resolve_all(&self, keys: &[Key]) -> Vec<NamedRef<'_>> {
        keys.iter().map(|k| self.named(*k)).collect()
    }

    /// Memberships of `contact` in `group`, wherever they live.
    pub fn memberships_of(&self, contact: &ObjectRef, group: &ObjectRef) -> Vec<NamedRef<'_>> {
        match self.lookup_pair(contact, group) {
            Some(pair) => self.resolve_all(self.indexes.memberships_by_pair.get(&pair)),
            None => Vec::new(),
        }
    }

    /// The (contact, group) pair the membership `namespace/name` names, so a change to one
    /// membership finds its removals without scanning.
    pub fn membership(&self, namespace: &str, name: &str) -> Option<(ObjectRef, ObjectRef)> {
        match self.row(ViewKind::Membership, namespace, name)? {
            (_, Row::Membership(pair)) => Some(self.pair_refs(*pair)),
            _ => None,
        }
    }

    /// The (contact, group) pair the removal `namespace/name` names.
    pub fn removal(&self, namespace: &str, name: &str) -> Option<(ObjectRef, ObjectRef)> {
        match self.row(ViewKind::Removal, namespace, name)? {
            (_, Row::Removal(pair)) => Some(self.pair_refs(*pair)),
            _ => None,
        }
    }

    fn pair_refs(&self, pair: Pair) -> (ObjectRef, ObjectRef) {
        let owned = |key: Key| {
            let named = self.named(key);
            ObjectRef {
                name: named.name.to_owned(),
                namespace: named.namespace.to_owned(),
            }
        };
        (owned(pair.contact), owned(pair.group))
    }

    /// Removals (opt-outs) of `contact` from `group`, wherever they live.
    pub fn removals_of(&self, contact: &ObjectRef, group: &ObjectRef) -> Vec<NamedRef<'_>> {
        match self.lookup_pair(contact, group) {
            Some(pair) => self.resolve_all(self.indexes.removals_by_pair.get(&pair)),
            None => Vec::new(),
        }
    }

    /// The User `name`: its email and uid.
    pub fn user(&self, name: &str) -> Option<UserView<'_>> {
        match self.row(ViewKind::User, "", name)? {
            (_, Row::User(u)) => Some(UserView {
                name: self.symbols.resolve(self.lookup_key("", name)?.name),
                email: self.symbols.resolve(u.email),
                uid: self.symbols.resolve(u.uid),
            }),
            _ => None,
        }
    }

    /// Whether the Role `namespace/name` exists.
    pub fn role_exists(&self, namespace: &str, name: &str) -> bool {
        self.row(ViewKind::Role, namespace, name).is_some()
    }

    /// Whether the ClusterRole `name` exists.
    pub fn cluster_role_exists(&self, name: &str) -> bool {
        self.row(ViewKind::ClusterRole, "", name).is_some()
    }

    /// Whether `user` holds an organization-membership binding in `namespace`.
    pub fn is_member(&self, namespace: &str, user: &str) -> bool {
        match (self.symbols.get(namespace), self.symbols.get(user)) {
            (Some(ns), Some(u)) => !self
                .indexes
                .members_by_namespace_user
                .get(&(ns, u))
                .is_empty(),
            _ => false,
        }
    }

    /// Users whose email equals `email`, compared case-insensitively.
    pub fn users_by_email(&self, email: &str) -> Vec<&str> {
        let Some(sym) = self.symbols.get(&email.to_lowercase()) else {
            return Vec::new();
        };
        self.indexes
            .users_by_email
            .get(&sym)
            .iter()
            .map(|k| self.symbols.resolve(k.name))
            .collect()
    }

    /// Invitations for `email` (case-insensitive) to `organization`, with their records.
    pub fn invitations_for(
        &self,
        email: &str,
        organization: &str,
    ) -> Vec<(NamedRef<'_>, InvitationRecord)> {
        let (Some(e), Some(o)) = (
            self.symbols.get(&email.to_lowercase()),
            self.symbols.get(organization),
        ) else {
            return Vec::new();
        };
        let table = &self.tables[ViewKind::Invitation as usize];
        self.indexes
            .invitations_by_email_org
            .get(&(e, o))
            .iter()
            .filter_map(|k| match table.get(k)? {
                Row::Invitation(i) => Some((self.named(*k), *i)),
                _ => None,
            })
            .collect()
    }
}
