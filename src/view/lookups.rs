//! The lookups admission rules and controllers make in the [`Store`]: resolved, borrowed views
//! of its records, through the secondary indexes (O(1) or O(matches)).

use super::found::{ContactView, GroupView, NamedRef, SubjectView, UserView};
use super::index::Key;
use super::records::{ContactRecord, GroupRecord, InvitationRecord, Pair};
use super::store::{Row, Store, ViewKind};
use crate::api::common::ObjectRef;
use crate::api::notification::Visibility;

impl Store {
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
        self.contact_at(self.lookup_key(namespace, name)?)
    }

    fn contact_at(&self, key: Key) -> Option<ContactView<'_>> {
        match self.row_at(ViewKind::Contact, key)? {
            (key, Row::Contact(c)) => Some(self.contact_view(key, c)),
            _ => None,
        }
    }

    fn contacts_at<'a>(&'a self, keys: &'a [Key]) -> impl Iterator<Item = ContactView<'a>> + 'a {
        keys.iter().filter_map(move |k| self.contact_at(*k))
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

    fn group_view(&self, key: Key, g: &GroupRecord) -> GroupView<'_> {
        GroupView {
            key: self.named(key),
            display_name: self.symbols.resolve(g.display_name),
            visibility: g.visibility,
        }
    }

    /// The ContactGroup `namespace/name`.
    pub fn group(&self, namespace: &str, name: &str) -> Option<GroupView<'_>> {
        self.group_at(self.lookup_key(namespace, name)?)
    }

    fn group_at(&self, key: Key) -> Option<GroupView<'_>> {
        match self.row_at(ViewKind::ContactGroup, key)? {
            (key, Row::Group(g)) => Some(self.group_view(key, g)),
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

    fn resolve_all(&self, keys: &[Key]) -> Vec<NamedRef<'_>> {
        keys.iter().map(|k| self.named(*k)).collect()
    }

    /// Memberships of `contact` in `group`, wherever they live.
    pub fn memberships_of(&self, contact: &ObjectRef, group: &ObjectRef) -> Vec<NamedRef<'_>> {
        self.pair_lookup(contact, group).memberships()
    }

    /// The pair `contact`, `group`, looked up once for the several questions a rule asks of it.
    pub fn pair_lookup(&self, contact: &ObjectRef, group: &ObjectRef) -> PairLookup<'_> {
        PairLookup {
            store: self,
            contact: self.lookup_key(&contact.namespace, &contact.name),
            group: self.lookup_key(&group.namespace, &group.name),
        }
    }

    /// The (contact, group) pair the membership `namespace/name` names, so a change to one
    /// membership finds its removals without scanning.
    pub fn membership(&self, namespace: &str, name: &str) -> Option<(ObjectRef, ObjectRef)> {
        match self.row(ViewKind::Membership, namespace, name)? {
            (_, Row::Membership(pair, _)) => Some(self.pair_refs(*pair)),
            _ => None,
        }
    }

    /// The (contact, group) pair the removal `namespace/name` names.
    pub fn removal(&self, namespace: &str, name: &str) -> Option<(ObjectRef, ObjectRef)> {
        match self.row(ViewKind::Removal, namespace, name)? {
            (_, Row::Removal(pair, _)) => Some(self.pair_refs(*pair)),
            _ => None,
        }
    }

    pub(super) fn pair_refs(&self, pair: Pair) -> (ObjectRef, ObjectRef) {
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
        self.pair_lookup(contact, group).removals()
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

/// A (contact, group) pair resolved to the view's keys once: a membership review asks whether
/// each exists and what memberships and removals the pair has, and each of those asked by name
/// would hash and compare the same strings again (the name lookups were the largest part of a
/// review's decision in the load benchmark's profile).
#[derive(Clone, Copy)]
pub struct PairLookup<'a> {
    store: &'a Store,
    contact: Option<Key>,
    group: Option<Key>,
}

impl<'a> PairLookup<'a> {
    /// Whether the Contact exists (without resolving its fields, as [`PairLookup::contact`] does).
    pub fn contact_exists(&self) -> bool {
        self.contact
            .and_then(|key| self.store.row_at(ViewKind::Contact, key))
            .is_some()
    }

    /// The Contact, when it exists.
    pub fn contact(&self) -> Option<ContactView<'a>> {
        self.store.contact_at(self.contact?)
    }

    /// The ContactGroup, when it exists.
    pub fn group(&self) -> Option<GroupView<'a>> {
        self.store.group_at(self.group?)
    }

    fn both(&self) -> Option<Pair> {
        Some(Pair {
            contact: self.contact?,
            group: self.group?,
        })
    }

    /// Memberships of the contact in the group, wherever they live.
    pub fn memberships(&self) -> Vec<NamedRef<'a>> {
        let index = &self.store.indexes.memberships_by_pair;
        let keys = self.both().map_or(&[][..], |pair| index.get(&pair));
        self.store.resolve_all(keys)
    }

    /// Removals (opt-outs) of the contact from the group, wherever they live.
    pub fn removals(&self) -> Vec<NamedRef<'a>> {
        let index = &self.store.indexes.removals_by_pair;
        let keys = self.both().map_or(&[][..], |pair| index.get(&pair));
        self.store.resolve_all(keys)
    }
}
