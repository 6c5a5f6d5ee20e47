//! What a person's preference page shows, read from the view alone (every replica keeps it), so
//! a page costs no API call: the Contact (checked against the uid its link names), and each group
//! the person is in or left, with whether they may change it there.

use super::found::{ContactView, GroupView};
use super::index::Key;
use super::records::{Pair, uid_digest};
use super::store::{Row, Store, ViewKind};
use crate::api::notification::Visibility;

/// Where a person stands with one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// A member of a public group: they may leave.
    Member,
    /// A member of a private group: their organisation manages it.
    Managed,
    /// They left a public group themselves (a page, a link or a provider): they may rejoin.
    Left,
    /// Someone else removed them (an operator, or a spam complaint): only that can be undone by
    /// whoever made it.
    Removed,
}

/// One group on the page.
#[derive(Clone, Copy, Debug)]
pub struct GroupChoice<'a> {
    /// The group.
    pub group: GroupView<'a>,
    /// `spec.description`, "" when unset.
    pub description: &'a str,
    /// Where the person stands.
    pub standing: Standing,
}

/// A person's page: their Contact and their groups, by display name.
#[derive(Clone, Debug)]
pub struct PreferencesView<'a> {
    /// The Contact.
    pub contact: ContactView<'a>,
    /// Their groups, sorted by display name then namespace and name.
    pub groups: Vec<GroupChoice<'a>>,
}

impl Store {
    /// The page of the Contact `namespace/name` whose uid is `uid`; `None` when there is no such
    /// Contact, or it was recreated since the link was made. Cost: one pass over the groups and
    /// two index lookups per group (groups are few beside contacts).
    pub fn preferences(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Option<PreferencesView<'_>> {
        let key = self.lookup_key(namespace, name)?;
        let contact = match self.row_at(ViewKind::Contact, key)? {
            (_, Row::Contact(c)) if c.uid == uid_digest(uid) => self.contact(namespace, name)?,
            _ => return None,
        };
        let mut groups: Vec<GroupChoice<'_>> = self.tables[ViewKind::ContactGroup as usize]
            .iter()
            .filter_map(|(group_key, row)| {
                let Row::Group(record) = row else {
                    return None;
                };
                let standing = self.standing(key, *group_key, record.visibility)?;
                Some(GroupChoice {
                    group: self.group(
                        self.symbols.resolve(group_key.namespace),
                        self.symbols.resolve(group_key.name),
                    )?,
                    description: record.description.map_or("", |d| self.symbols.resolve(d)),
                    standing,
                })
            })
            .collect();
        groups.sort_by(|a, b| {
            (
                a.group.display_name,
                a.group.key.namespace,
                a.group.key.name,
            )
                .cmp(&(
                    b.group.display_name,
                    b.group.key.namespace,
                    b.group.key.name,
                ))
        });
        Some(PreferencesView { contact, groups })
    }

    /// Where `contact` stands with `group`; `None` when the page does not show it (never a
    /// member, or only removed from a private group).
    fn standing(&self, contact: Key, group: Key, visibility: Visibility) -> Option<Standing> {
        let pair = Pair { contact, group };
        let removals = self.indexes.removals_by_pair.get(&pair);
        let member = !self.indexes.memberships_by_pair.get(&pair).is_empty();
        let public = visibility == Visibility::Public;
        if !removals.is_empty() {
            if !public {
                return None;
            }
            let by_person = removals.iter().all(|r| {
                matches!(
                    self.row_at(ViewKind::Removal, *r),
                    Some((_, Row::Removal(_, status))) if status.by_person
                )
            });
            return Some(if by_person {
                Standing::Left
            } else {
                Standing::Removed
            });
        }
        match (member, public) {
            (false, _) => None,
            (true, true) => Some(Standing::Member),
            (true, false) => Some(Standing::Managed),
        }
    }
}
