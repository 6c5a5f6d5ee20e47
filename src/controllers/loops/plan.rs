//! What a Loops event does, decided without I/O from what the cluster holds: who the person is,
//! which groups a list is bound to, and what one list event does for one group.
//!
//! - The person is the Contact whose `metadata.uid` is the event's `userId` (the sync upserts
//!   contacts by `userId` = uid); without a `userId`, the Contact with the event's email.
//! - A list is bound to the ContactGroups whose `spec.providers` hold `{name: Loops, id: <list>}`.
//! - Leaving a **public** group's list opts the person out of the group (a removal); rejoining it
//!   undoes a provider or link opt-out ([`crate::controllers::consent::rejoin`]).
//! - Leaving a **private** group's list keeps the membership (private groups are administrative)
//!   and marks it [`LOOPS_UNSUBSCRIBED`] True; rejoining the list marks it False.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

use crate::api::common::sync::LOOPS_UNSUBSCRIBED;
use crate::api::notification::{GroupProviderName, Visibility};
use crate::api::{Contact, ContactGroup};
use crate::controllers::ObjectKey;
use crate::providers::loops::events::ContactIdentity;

/// Reason of [`LOOPS_UNSUBSCRIBED`] True: the person left the list at Loops.
pub const LEFT_REASON: &str = "LoopsUnsubscribe";
/// Reason of [`LOOPS_UNSUBSCRIBED`] False: the person rejoined the list at Loops.
pub const REJOINED_REASON: &str = "LoopsResubscribe";

/// Whether `contact` is the person `identity` names: by uid when the event has a `userId`, else
/// by email (case-insensitive).
pub fn is_person(contact: &Contact, identity: &ContactIdentity) -> bool {
    match identity.user_id.as_deref().filter(|id| !id.is_empty()) {
        Some(user_id) => contact.metadata.uid.as_deref() == Some(user_id),
        None => contact.spec.email.eq_ignore_ascii_case(&identity.email),
    }
}

/// Whether `group` is bound to the Loops list `list_id` (and not being deleted).
pub fn bound_to(group: &ContactGroup, list_id: &str) -> bool {
    group.metadata.deletion_timestamp.is_none()
        && group
            .spec
            .providers
            .iter()
            .any(|p| p.name == GroupProviderName::Loops && p.id == list_id)
}

/// Which way a list event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListChange {
    /// `contact.mailingList.unsubscribed`.
    Left,
    /// `contact.mailingList.subscribed`.
    Joined,
}

/// What one list event does for one group bound to the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Public group, the person left: the pair's removal (whether or not they are a member now:
    /// a membership made later must not put them back on a list they left).
    OptOut,
    /// Public group, the person rejoined: undo a provider or link opt-out, if that is what keeps
    /// them out.
    Rejoin,
    /// Private group: mark the person's memberships (`opted_out`: left the list, else rejoined).
    Mark {
        /// The memberships of the pair.
        memberships: Vec<ObjectKey>,
        /// Whether the person left the list.
        opted_out: bool,
    },
    /// Nothing: a private group the person is not a member of.
    Nothing,
}

/// What `change` does for a group of `visibility` in which the person has `memberships`.
pub fn step(change: ListChange, visibility: Visibility, memberships: Vec<ObjectKey>) -> Step {
    match (visibility, change) {
        (Visibility::Public, ListChange::Left) => Step::OptOut,
        (Visibility::Public, ListChange::Joined) => Step::Rejoin,
        (Visibility::Private, _) if memberships.is_empty() => Step::Nothing,
        (Visibility::Private, change) => Step::Mark {
            memberships,
            opted_out: change == ListChange::Left,
        },
    }
}

/// The [`LOOPS_UNSUBSCRIBED`] condition to apply on a membership whose current one is `current`,
/// for an event at `at`; `None` when nothing changes: it already says so, it records something
/// newer, or (rejoining) the person never left. In the same second, leaving wins: the event
/// times are whole seconds, and keeping the person off the list is the side that cannot mail
/// anyone against their word.
pub fn mark(
    current: Option<&Condition>,
    opted_out: bool,
    at: jiff::Timestamp,
    event_id: &str,
) -> Option<Value> {
    let wanted = if opted_out { "True" } else { "False" };
    let at = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    match current {
        None if !opted_out => return None,
        None => {}
        Some(c) if c.status == wanted => return None,
        Some(c) if c.last_transition_time.0 > at => return None,
        Some(c) if c.last_transition_time.0 == at && !opted_out => return None,
        Some(_) => {}
    }
    let (reason, message) = if opted_out {
        (
            LEFT_REASON,
            format!(
                "the person left the group's list at Loops at {at}; the membership stays (private group) but nothing puts them back on the list (event {event_id})"
            ),
        )
    } else {
        (
            REJOINED_REASON,
            format!("the person rejoined the group's list at Loops at {at} (event {event_id})"),
        )
    };
    Some(json!({
        "type": LOOPS_UNSUBSCRIBED,
        "status": wanted,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::sync::loops_list_opt_out;
    use crate::api::notification::{ContactGroupSpec, ContactSpec, GroupProviderRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn identity(email: &str, user_id: Option<&str>) -> ContactIdentity {
        ContactIdentity {
            id: "cl1".into(),
            email: email.into(),
            user_id: user_id.map(str::to_owned),
        }
    }

    fn contact(uid: &str, email: &str) -> Contact {
        let mut c = Contact::new(
            "ada",
            ContactSpec {
                email: email.into(),
                ..Default::default()
            },
        );
        c.metadata.uid = Some(uid.into());
        c
    }

    #[test]
    fn the_person_is_found_by_uid_else_by_email() {
        let ada = contact("uid-ada", "Ada@Example.com");
        assert!(is_person(
            &ada,
            &identity("old@example.com", Some("uid-ada"))
        ));
        assert!(
            !is_person(&ada, &identity("ada@example.com", Some("uid-other"))),
            "a userId names one Contact; the same address on another is not the person"
        );
        assert!(is_person(&ada, &identity("ada@example.com", None)));
        assert!(is_person(&ada, &identity("ada@example.com", Some(""))));
        assert!(!is_person(&ada, &identity("bob@example.com", None)));
    }

    fn group(providers: Vec<GroupProviderRef>) -> ContactGroup {
        ContactGroup::new(
            "news",
            ContactGroupSpec {
                display_name: "News".into(),
                visibility: Visibility::Public,
                description: None,
                providers,
            },
        )
    }

    #[test]
    fn a_list_is_bound_to_the_groups_naming_it() {
        let loops = |id: &str| GroupProviderRef {
            name: GroupProviderName::Loops,
            id: id.into(),
        };
        assert!(bound_to(&group(vec![loops("l1")]), "l1"));
        assert!(!bound_to(&group(vec![loops("l2")]), "l1"));
        assert!(!bound_to(&group(vec![]), "l1"));
        let mut deleting = group(vec![loops("l1")]);
        deleting.metadata.deletion_timestamp = Some(Time("2026-12-07T12:00:00Z".parse().unwrap()));
        assert!(!bound_to(&deleting, "l1"));
    }

    #[test]
    fn public_groups_opt_out_and_rejoin_private_ones_are_marked() {
        let m = vec![ObjectKey::new("people", "ada-staff")];
        assert_eq!(
            step(ListChange::Left, Visibility::Public, vec![]),
            Step::OptOut
        );
        assert_eq!(
            step(ListChange::Left, Visibility::Public, m.clone()),
            Step::OptOut
        );
        assert_eq!(
            step(ListChange::Joined, Visibility::Public, vec![]),
            Step::Rejoin
        );
        assert_eq!(
            step(ListChange::Left, Visibility::Private, m.clone()),
            Step::Mark {
                memberships: m.clone(),
                opted_out: true
            }
        );
        assert_eq!(
            step(ListChange::Joined, Visibility::Private, m.clone()),
            Step::Mark {
                memberships: m,
                opted_out: false
            }
        );
        assert_eq!(
            step(ListChange::Left, Visibility::Private, vec![]),
            Step::Nothing
        );
    }

    fn condition(status: &str, at: &str) -> Condition {
        Condition {
            type_: LOOPS_UNSUBSCRIBED.into(),
            status: status.into(),
            reason: LEFT_REASON.into(),
            message: String::new(),
            last_transition_time: Time(at.parse().unwrap()),
            observed_generation: None,
        }
    }

    #[test]
    fn marks_follow_the_newest_event_and_leaving_wins_a_tie() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let left = mark(None, true, t("2026-12-07T12:00:00.700Z"), "msg_1").unwrap();
        assert_eq!(left["status"], "True");
        assert_eq!(left["reason"], LEFT_REASON);
        assert_eq!(left["lastTransitionTime"], "2026-12-07T12:00:00Z");
        assert!(left["message"].as_str().unwrap().contains("msg_1"));
        let parsed: Condition = serde_json::from_value(left).unwrap();
        assert!(loops_list_opt_out(std::slice::from_ref(&parsed)));
        // Never left: a rejoin has nothing to lift.
        assert_eq!(mark(None, false, t("2026-12-07T12:00:00Z"), "m"), None);
        let on = condition("True", "2026-12-07T12:00:00Z");
        assert_eq!(
            mark(Some(&on), true, t("2026-12-07T13:00:00Z"), "m"),
            None,
            "already"
        );
        assert_eq!(
            mark(Some(&on), false, t("2026-12-07T11:00:00Z"), "m"),
            None,
            "older"
        );
        assert_eq!(
            mark(Some(&on), false, t("2026-12-07T12:00:00Z"), "m"),
            None,
            "a tie"
        );
        let back = mark(Some(&on), false, t("2026-12-07T12:00:01Z"), "m").unwrap();
        assert_eq!(
            (back["status"].as_str(), back["reason"].as_str()),
            (Some("False"), Some(REJOINED_REASON))
        );
        let off = condition("False", "2026-12-07T12:00:00Z");
        assert!(!loops_list_opt_out(std::slice::from_ref(&off)));
        assert!(
            mark(Some(&off), true, t("2026-12-07T12:00:00Z"), "m").is_some(),
            "a tie"
        );
        assert_eq!(mark(Some(&off), true, t("2026-12-07T11:59:59Z"), "m"), None);
    }
}
