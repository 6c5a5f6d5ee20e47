//! The pure parts of a broadcast: which members the next batch covers (in the sending order, after
//! the cursor), the range a recorded batch covers again after a restart, and the mail each
//! recipient gets (their own variables, the Resend-style placeholders, one-click headers).

use std::cmp::Ordering;

use crate::api::Contact;
use crate::api::broadcast::PendingBatch;
use crate::api::common::ObjectRef;
use crate::controllers::email::UnsubscribeLinks;
use crate::controllers::email::render::{Parsed, Rendered, Sender, outgoing_to};
use crate::providers::resend::OutgoingEmail;
use crate::providers::resend::emails::BATCH_LIMIT;
use crate::server::preferences;
use crate::server::unsubscribe::{self, Named, Target};
use crate::template::{Escape, Value, Variables, substitute_placeholders};
use crate::view::broadcasts::Member;

/// Recipients in one provider call: Resend's batch limit.
pub const BATCH_SIZE: usize = BATCH_LIMIT;

/// The header naming the one-click unsubscribe URL (RFC 2369).
pub const LIST_UNSUBSCRIBE: &str = "List-Unsubscribe";
/// The header saying the URL takes a one-click POST (RFC 8058).
pub const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe-Post";
/// The only value [`LIST_UNSUBSCRIBE_POST`] has.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// A cursor or range bound (`namespace/name`) as the pair the sending order compares.
fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// How `contact` compares with the bound `key` in the sending order.
fn compare(contact: &ObjectRef, key: &str) -> Ordering {
    (contact.namespace.as_str(), contact.name.as_str()).cmp(&split(key))
}

/// A batch: the members from `first` through `last` in the sending order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The first member of the range.
    pub first: String,
    /// The last member of the range: the cursor once the batch is done.
    pub last: String,
    /// The members of the range the mail goes to, in order.
    pub recipients: Vec<ObjectRef>,
    /// Members of the range passed over.
    pub skipped: i64,
}

/// The next batch after the cursor `sent_through`: up to [`BATCH_SIZE`] recipients, the range
/// ending at the last of them (members passed over after it belong to the next range). `None`
/// when no recipient is left.
pub fn next_batch(members: &[Member], sent_through: Option<&str>) -> Option<Plan> {
    let mut plan: Option<Plan> = None;
    let mut skipped_since_last = 0;
    for member in members
        .iter()
        .filter(|m| sent_through.is_none_or(|c| compare(&m.contact, c) == Ordering::Greater))
    {
        let plan = plan.get_or_insert_with(|| Plan {
            first: member.key(),
            ..Plan::default()
        });
        if plan.recipients.len() == BATCH_SIZE {
            break;
        }
        if member.skip.is_some() {
            skipped_since_last += 1;
            continue;
        }
        plan.recipients.push(member.contact.clone());
        plan.last = member.key();
        plan.skipped += skipped_since_last;
        skipped_since_last = 0;
    }
    plan.filter(|p| !p.recipients.is_empty())
}

/// Members after the cursor that are all passed over: counted when the broadcast finishes.
pub fn skipped_after(members: &[Member], sent_through: Option<&str>) -> i64 {
    let after = members
        .iter()
        .filter(|m| sent_through.is_none_or(|c| compare(&m.contact, c) == Ordering::Greater));
    after.filter(|m| m.skip.is_some()).count() as i64
}

/// The recorded batch's range as the members stand now: the same recipients unless the group
/// changed within it since it was recorded.
pub fn replan(members: &[Member], pending: &PendingBatch) -> Plan {
    let mut plan = Plan {
        first: pending.first_contact.clone(),
        last: pending.last_contact.clone(),
        ..Plan::default()
    };
    for member in members.iter().filter(|m| {
        compare(&m.contact, &pending.first_contact) != Ordering::Less
            && compare(&m.contact, &pending.last_contact) != Ordering::Greater
    }) {
        match member.skip {
            Some(_) => plan.skipped += 1,
            None => plan.recipients.push(member.contact.clone()),
        }
    }
    plan
}

/// Whether the recorded batch still waits to be confirmed: the cursor is before its end.
pub fn is_pending(pending: &PendingBatch, sent_through: Option<&str>) -> bool {
    match sent_through {
        None => true,
        Some(cursor) => split(cursor) < split(&pending.last_contact),
    }
}

/// The group a broadcast goes to, as the links name it.
#[derive(Clone, Debug)]
pub struct Audience {
    /// The ContactGroup (namespace, name, uid).
    pub group: Named,
    /// Public groups get one-click links; private ones none.
    pub public: bool,
    /// The public group's Resend topic, which every mail is sent with (none until it is made).
    pub topic_id: Option<String>,
}

/// What every recipient's mail is made from.
pub struct Mailing<'a> {
    /// The template, parsed once.
    pub template: &'a Parsed,
    /// The group.
    pub audience: &'a Audience,
    /// How links are made; `None` only for private groups (a public group without it sends
    /// nothing).
    pub links: Option<&'a UnsubscribeLinks>,
    /// The broadcast's namespace, its mail's tag.
    pub namespace: &'a str,
    /// `from` and `reply_to`.
    pub sender: &'a Sender,
}

impl Mailing<'_> {
    /// The one-click link of `contact` (public groups with links configured), else empty.
    pub fn unsubscribe_link(&self, contact: &Contact) -> String {
        let (Some(links), true) = (self.links, self.audience.public) else {
            return String::new();
        };
        let target = Target {
            contact: named(contact),
            group: self.audience.group.clone(),
        };
        unsubscribe::link(&links.base_url, &links.keys, &target)
    }

    /// The preference page link of `contact` (links configured), else empty: for every group,
    /// private ones included (the page shows them as managed by the organisation).
    pub fn preferences_link(&self, contact: &Contact) -> String {
        let Some(links) = self.links else {
            return String::new();
        };
        preferences::tokens::link(
            &links.base_url,
            &links.keys,
            &named(contact),
            jiff::Timestamp::now().as_second(),
            links.preferences_ttl,
        )
    }

    /// The mail to `contact`: the template rendered with its own variables (`GivenName`,
    /// `FamilyName`, `Email`, `UnsubscribeLink`, `PreferencesLink`), the placeholders substituted (escaped in HTML),
    /// and for a public group the one-click headers.
    pub fn email_for(&self, contact: &Contact) -> OutgoingEmail {
        let spec = &contact.spec;
        let given = spec.given_name.as_deref().unwrap_or_default();
        let family = spec.family_name.as_deref().unwrap_or_default();
        let link = self.unsubscribe_link(contact);
        let text = |s: &str| Value::Text(s.to_owned());
        let variables: Variables = [
            ("GivenName", text(given)),
            ("FamilyName", text(family)),
            ("Email", text(&spec.email)),
            ("UnsubscribeLink", text(&link)),
            ("PreferencesLink", text(&self.preferences_link(contact))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let rendered = self.template.render(&variables);
        let fill = |s: &str, escape| substitute_placeholders(s, given, family, &spec.email, escape);
        let rendered = Rendered {
            subject: fill(&rendered.subject, Escape::None),
            html: fill(&rendered.html, Escape::Html),
            text: fill(&rendered.text, Escape::None),
        };
        let mut email = outgoing_to(&rendered, &spec.email, self.namespace, self.sender);
        if !link.is_empty() {
            email
                .headers
                .insert(LIST_UNSUBSCRIBE.into(), format!("<{link}>"));
            email
                .headers
                .insert(LIST_UNSUBSCRIBE_POST.into(), ONE_CLICK.into());
        }
        email
    }
}

/// What links name a Contact by.
fn named(contact: &Contact) -> Named {
    Named {
        namespace: contact.metadata.namespace.clone().unwrap_or_default(),
        name: contact.metadata.name.clone().unwrap_or_default(),
        uid: contact.metadata.uid.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::broadcasts::Skip;

    fn member(name: &str, skip: Option<Skip>) -> Member {
        Member {
            contact: ObjectRef {
                namespace: "people".into(),
                name: name.into(),
            },
            skip,
        }
    }

    #[test]
    fn batches_follow_the_cursor_and_count_the_passed_over() {
        let mut members: Vec<Member> = (0..250)
            .map(|i| member(&format!("c{i:03}"), None))
            .collect();
        members[0].skip = Some(Skip::OptedOut);
        members[5].skip = Some(Skip::Suppressed);
        members[249].skip = Some(Skip::Unsubscribed);
        let first = next_batch(&members, None).unwrap();
        assert_eq!(first.first, "people/c000");
        assert_eq!(first.recipients.len(), BATCH_SIZE);
        assert_eq!(first.skipped, 2);
        assert_eq!(first.last, "people/c101");
        let second = next_batch(&members, Some(&first.last)).unwrap();
        assert_eq!(second.first, "people/c102");
        assert_eq!(second.last, "people/c201");
        let third = next_batch(&members, Some(&second.last)).unwrap();
        assert_eq!(third.recipients.len(), 47);
        assert_eq!(third.last, "people/c248");
        assert!(next_batch(&members, Some(&third.last)).is_none());
        assert_eq!(skipped_after(&members, Some(&third.last)), 1);
        let pending = PendingBatch {
            first_contact: second.first.clone(),
            last_contact: second.last.clone(),
            ..PendingBatch::default()
        };
        assert_eq!(replan(&members, &pending), second);
        assert!(is_pending(&pending, Some(&first.last)));
        assert!(!is_pending(&pending, Some(&second.last)));
    }

    #[test]
    fn the_order_is_by_namespace_then_name_not_by_joined_text() {
        // "a-b/x" sorts before "a/y" as text ('-' < '/'), after it as a pair.
        let members = vec![
            Member {
                contact: ObjectRef {
                    namespace: "a".into(),
                    name: "y".into(),
                },
                skip: None,
            },
            Member {
                contact: ObjectRef {
                    namespace: "a-b".into(),
                    name: "x".into(),
                },
                skip: None,
            },
        ];
        let rest = next_batch(&members, Some("a/y")).unwrap();
        assert_eq!(rest.recipients.len(), 1);
        assert_eq!(rest.first, "a-b/x");
    }
}
