//! The pure half of enrollment: which contacts a policy still has to act on, and what to do with
//! each, as a function of the observed state (the policy, the contacts with their record
//! annotations, and the view's memberships and removals). No I/O, so every rule is tested here.

use kube::ResourceExt;

use std::collections::BTreeSet;

use crate::api::ObjectRef;
use crate::api::notification::{ContactGroupEnrollmentPolicy, SubjectKind};
use crate::controllers::names;
use crate::view::{ContactFacts, Store};

/// Prefix of the annotation a policy leaves on every contact it evaluated. One key per policy,
/// so "evaluated by this policy" survives restarts and leader changes and lives with the contact.
pub const RECORD_PREFIX: &str = crate::view::RECORD_PREFIX;
/// Label on the memberships a policy creates, naming the policy (label-safe), so they can be
/// listed per policy.
pub const POLICY_LABEL: &str = "enrollment.notification.miloapis.com/policy";
/// Annotation on the memberships a policy creates carrying the policy's full name, which the
/// label may only hold hashed.
pub const POLICY_NAME_ANNOTATION: &str = "enrollment.notification.miloapis.com/policy-name";
/// Annotation on the memberships a policy creates carrying the policy's uid, so the record
/// written as one goes names the policy that made it (see [`Record::value`]).
pub const POLICY_UID_ANNOTATION: &str = "enrollment.notification.miloapis.com/policy-uid";
/// The finalizer on the memberships a policy creates (see [`crate::view::ENROLLMENT_FINALIZER`]).
pub const FINALIZER: &str = crate::view::ENROLLMENT_FINALIZER;

/// The record annotation key of `policy`: the name part is label-safe, so policy names of any
/// valid length give a valid key (Kubernetes limits the name part to 63 characters).
pub fn record_key(policy: &str) -> String {
    format!("{RECORD_PREFIX}{}", names::label_safe(policy))
}

/// What a policy concluded about a contact; the value of the record annotation. Any record
/// means the contact is done for that policy: it is never enrolled again, even if it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// The policy created (or found its own) membership.
    Enrolled,
    /// The contact had opted out of the group; nothing was created.
    OptedOut,
    /// The contact was already a member (another policy, or by hand); nothing was created.
    AlreadyMember,
}

impl Record {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Record::Enrolled => "enrolled",
            Record::OptedOut => "opted-out",
            Record::AlreadyMember => "already-member",
        }
    }

    /// The annotation value for the policy with `uid`: `<outcome>/<uid>`, so that a policy
    /// deleted and recreated under the same name (the only way to change its group) evaluates
    /// every contact afresh instead of inheriting its predecessor's records.
    pub fn value(self, uid: Option<&str>) -> String {
        match uid {
            Some(uid) => format!("{}/{uid}", self.as_str()),
            None => self.as_str().to_owned(),
        }
    }

    /// Reads an annotation value written for some policy of this name: `None` when it was
    /// written for another policy (a different uid), else `Some` of what [`Record::parse`] makes
    /// of the outcome. Values without a uid count for any policy of the name.
    pub fn recorded_for(value: &str, uid: Option<&str>) -> Option<Option<Self>> {
        let (outcome, written_for) = match value.split_once('/') {
            Some((outcome, written_for)) => (outcome, Some(written_for)),
            None => (value, None),
        };
        match (written_for, uid) {
            (Some(written_for), Some(uid)) if written_for != uid => None,
            _ => Some(Self::parse(outcome)),
        }
    }

    /// Reads an annotation value's outcome; `None` for values this version does not know (which
    /// still mark the contact as done, but are not counted).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "enrolled" => Some(Record::Enrolled),
            "opted-out" => Some(Record::OptedOut),
            "already-member" => Some(Record::AlreadyMember),
            _ => None,
        }
    }
}

/// One thing to do for one contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the membership, then record the outcome (normally [`Record::Enrolled`]).
    Enroll(ObjectRef),
    /// Nothing to create: only write this record.
    Record(ObjectRef, Record),
}

impl Step {
    /// The contact the step is about.
    pub fn contact(&self) -> &ObjectRef {
        match self {
            Step::Enroll(contact) | Step::Record(contact, _) => contact,
        }
    }

    /// The record the step is expected to write, which the plan's counts assume.
    pub fn expected(&self) -> Record {
        match self {
            Step::Enroll(_) => Record::Enrolled,
            Step::Record(_, record) => *record,
        }
    }
}

/// What one reconcile of a policy does, and the status counts once it is done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Steps in contact order (namespace, name), so a pass is deterministic.
    pub steps: Vec<Step>,
    /// Contacts recorded `enrolled`, counting those the steps are about to record.
    pub enrolled: i64,
    /// Contacts recorded `opted-out`, counting those the steps are about to record.
    pub skipped_opt_out: i64,
}

impl Plan {
    /// Adjusts the counts when a step ended with `actual` instead of what it expected (a webhook
    /// denial, a contact deleted meanwhile: `None`).
    pub fn settle(&mut self, expected: Record, actual: Option<Record>) {
        if actual == Some(expected) {
            return;
        }
        self.count(expected, -1);
        if let Some(actual) = actual {
            self.count(actual, 1);
        }
    }

    fn count(&mut self, record: Record, by: i64) {
        match record {
            Record::Enrolled => self.enrolled += by,
            Record::OptedOut => self.skipped_opt_out += by,
            Record::AlreadyMember => {}
        }
    }
}

/// Which contacts created in a policy's own second existed before it. `creationTimestamp` has
/// one-second resolution, so "created at or after the policy" cannot be read off timestamps for
/// that second; the view's own order of first sightings decides instead, once, and the decision
/// is recorded in the policy's status (`sameSecondContacts`) so that restarts and new leaders
/// keep it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boundary {
    /// `namespace/name` of the contacts of the policy's second that existed before it.
    pub existing: BTreeSet<String>,
}

impl Boundary {
    /// The boundary the policy's status records, once decided.
    pub fn recorded(policy: &ContactGroupEnrollmentPolicy) -> Option<Self> {
        let list = policy.status.as_ref()?.same_second_contacts.as_ref()?;
        Some(Self {
            existing: list.iter().cloned().collect(),
        })
    }

    /// Decides the boundary from the view: the contacts of the policy's second that the view
    /// held before it first held the policy. When it first held the policy in a relist (no
    /// replica was watching as it was created) it cannot tell, and every contact of that second
    /// counts as existing: a contact that may have existed before is never enrolled.
    pub fn decide(policy: &ContactGroupEnrollmentPolicy, store: &Store) -> Self {
        let Some(second) = policy.creation_timestamp().map(|t| t.0.as_second()) else {
            return Self::default();
        };
        let seen = store.policy_first_seen(&policy.name_any());
        let existing = store
            .enrollment_facts("")
            .filter(|c| c.created == Some(second))
            .filter(|c| match seen {
                Some((policy_seen, true)) => c.first_seen < policy_seen,
                _ => true,
            })
            .map(|c| format!("{}/{}", c.key.namespace, c.key.name))
            .collect();
        Self { existing }
    }

    /// The recorded boundary, else one decided now.
    pub fn of(policy: &ContactGroupEnrollmentPolicy, store: &Store) -> Self {
        Self::recorded(policy).unwrap_or_else(|| Self::decide(policy, store))
    }

    /// As the status records it, sorted.
    pub fn list(&self) -> Vec<String> {
        self.existing.iter().cloned().collect()
    }

    fn existed(&self, contact: &ContactFacts<'_>) -> bool {
        !self.existing.is_empty()
            && self
                .existing
                .contains(&format!("{}/{}", contact.key.namespace, contact.key.name))
    }
}

/// The plan of `policy` over the contacts in the view's `store`.
pub fn plan(policy: &ContactGroupEnrollmentPolicy, store: &Store) -> Plan {
    let boundary = Boundary::of(policy, store);
    plan_with(policy, store, &boundary, |_| None)
}

/// [`plan`], with `remembered` giving the records this process wrote that the view may not
/// show yet (so a pass right after another does not redo its last contacts, and a membership
/// whose record was written as it went is not made again before the view shows the record).
pub(crate) fn plan_with(
    policy: &ContactGroupEnrollmentPolicy,
    store: &Store,
    boundary: &Boundary,
    remembered: impl Fn(&ObjectRef) -> Option<Record>,
) -> Plan {
    let policy_name = policy.name_any();
    let key = record_key(&policy_name);
    let uid = policy.uid();
    let group = &policy.spec.contact_group_ref;
    let mut plan = Plan::default();
    for contact in store.enrollment_facts(&key) {
        let written = contact
            .record
            .and_then(|value| Record::recorded_for(value, uid.as_deref()));
        let contact_ref = ObjectRef {
            name: contact.key.name.to_owned(),
            namespace: contact.key.namespace.to_owned(),
        };
        let recorded = match written {
            Some(record) => Some(record),
            None => remembered(&contact_ref).map(Some),
        };
        if let Some(record) = recorded {
            if let Some(record) = record {
                plan.count(record, 1);
            }
            continue;
        }
        if !applies(policy, &contact, boundary) {
            continue;
        }
        let ours = names::enrollment_membership(&policy_name, &contact_ref.name);
        let step = match observed(store, &contact_ref, group, &ours) {
            // Our membership with its finalizer is the record: the annotation is written only
            // as it goes.
            Some(Record::Enrolled)
                if store.membership_holds_record(&contact_ref.namespace, &ours) =>
            {
                plan.count(Record::Enrolled, 1);
                continue;
            }
            Some(record) => Step::Record(contact_ref, record),
            None => Step::Enroll(contact_ref),
        };
        plan.count(step.expected(), 1);
        plan.steps.push(step);
    }
    plan.steps.sort_by(|a, b| {
        let (a, b) = (a.contact(), b.contact());
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
    plan
}

/// What the view already says about `contact` in `group`: opted out (a removal exists, which
/// wins over everything), enrolled (our membership, `ours`, exists: an earlier pass created it and
/// stopped before recording), already a member (any other membership), or nothing yet.
pub fn observed(
    store: &Store,
    contact: &ObjectRef,
    group: &ObjectRef,
    ours: &str,
) -> Option<Record> {
    if !store.removals_of(contact, group).is_empty() {
        return Some(Record::OptedOut);
    }
    let members = store.memberships_of(contact, group);
    if members
        .iter()
        .any(|m| m.namespace == contact.namespace && m.name == ours)
    {
        Some(Record::Enrolled)
    } else {
        (!members.is_empty()).then_some(Record::AlreadyMember)
    }
}

/// Whether `policy` applies to `contact` at all: the selector matches, the contact is not being
/// deleted, and it is new (created after the policy: in a later second, or in the policy's own
/// second but not among those that existed before it, see [`Boundary`]) unless the policy
/// backfills. A missing timestamp (on either side) counts as new: better one enrollment too
/// many, which the record then stops, than a silently skipped contact.
pub fn applies(
    policy: &ContactGroupEnrollmentPolicy,
    contact: &ContactFacts<'_>,
    boundary: &Boundary,
) -> bool {
    if contact.deleting {
        return false;
    }
    let selected = match policy
        .spec
        .contact_selector
        .as_ref()
        .and_then(|s| s.subject_kind)
    {
        None => true,
        Some(SubjectKind::User) => contact.user_subject,
    };
    let new_enough = match (contact.created, policy.creation_timestamp()) {
        (Some(created), Some(policy)) => {
            let second = policy.0.as_second();
            created > second || (created == second && !boundary.existed(contact))
        }
        _ => true,
    };
    selected && (policy.spec.backfill || new_enough)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::notification::Contact;
    use crate::api::notification::{
        ContactGroupEnrollmentPolicySpec, ContactGroupMembership, ContactGroupMembershipRemoval,
        ContactGroupMembershipRemovalSpec, ContactGroupMembershipSpec, ContactSelector,
        ContactSpec, SubjectRef,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const POLICY: &str = "newsletter";

    fn at(ts: &str) -> Option<Time> {
        Some(Time(ts.parse().unwrap()))
    }

    fn group() -> ObjectRef {
        ObjectRef {
            name: "news".into(),
            namespace: "groups".into(),
        }
    }

    fn policy(backfill: bool, users_only: bool) -> ContactGroupEnrollmentPolicy {
        let mut p = ContactGroupEnrollmentPolicy::new(
            POLICY,
            ContactGroupEnrollmentPolicySpec {
                contact_group_ref: group(),
                contact_selector: users_only.then_some(ContactSelector {
                    subject_kind: Some(SubjectKind::User),
                }),
                backfill,
                ..Default::default()
            },
        );
        p.metadata.creation_timestamp = at("2026-05-01T00:00:00Z");
        p
    }

    fn contact(name: &str, created: &str, kind: Option<&str>) -> Contact {
        let mut c = Contact::new(
            name,
            ContactSpec {
                email: format!("{name}@example.com"),
                subject: kind.map(|k| SubjectRef {
                    api_group: "iam.miloapis.com".into(),
                    kind: k.into(),
                    name: name.into(),
                    namespace: None,
                }),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.creation_timestamp = at(created);
        c
    }

    fn recorded(mut c: Contact, policy: &str, value: &str) -> Contact {
        c.annotations_mut().insert(record_key(policy), value.into());
        c
    }

    fn cref(name: &str) -> ObjectRef {
        ObjectRef {
            name: name.into(),
            namespace: "ns".into(),
        }
    }

    fn spec(contact: &str) -> ContactGroupMembershipSpec {
        ContactGroupMembershipSpec {
            contact_ref: cref(contact),
            contact_group_ref: group(),
        }
    }

    fn with_membership(store: &mut Store, name: &str, contact: &str) {
        let mut m = ContactGroupMembership::new(name, spec(contact));
        m.metadata.namespace = Some("ns".into());
        store.apply_membership(&m);
    }

    /// A membership as a policy creates it now: with the enrollment finalizer.
    fn with_held_membership(store: &mut Store, name: &str, contact: &str, deleting: bool) {
        let mut m = ContactGroupMembership::new(name, spec(contact));
        m.metadata.namespace = Some("ns".into());
        m.metadata.finalizers = Some(vec![FINALIZER.into()]);
        if deleting {
            m.metadata.deletion_timestamp = at(NEW);
        }
        store.apply_membership(&m);
    }

    fn with_removal(store: &mut Store, contact: &str) {
        let s = spec(contact);
        let mut r = ContactGroupMembershipRemoval::new(
            &format!("{contact}-out"),
            ContactGroupMembershipRemovalSpec {
                contact_ref: s.contact_ref,
                contact_group_ref: s.contact_group_ref,
            },
        );
        r.metadata.namespace = Some("ns".into());
        store.apply_removal(&r);
    }

    fn arcs(contacts: Vec<Contact>) -> Vec<Contact> {
        contacts
    }

    /// The plan over `store` with `contacts` added: the view enrollment plans from.
    fn plan(policy: &ContactGroupEnrollmentPolicy, contacts: &[Contact], store: Store) -> Plan {
        plan_with(policy, contacts, store, |_| None)
    }

    fn plan_with(
        policy: &ContactGroupEnrollmentPolicy,
        contacts: &[Contact],
        mut store: Store,
        remembered: impl Fn(&ObjectRef) -> Option<Record>,
    ) -> Plan {
        contacts.iter().for_each(|c| store.apply_contact(c));
        let boundary = Boundary::of(policy, &store);
        super::plan_with(policy, &store, &boundary, remembered)
    }

    const NEW: &str = "2026-06-01T00:00:00Z";
    const OLD: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn new_contacts_are_enrolled_in_name_order_and_counted() {
        let contacts = arcs(vec![contact("bob", NEW, None), contact("alice", NEW, None)]);
        let plan = plan(&policy(false, false), &contacts, Store::default());
        assert_eq!(
            plan.steps,
            [Step::Enroll(cref("alice")), Step::Enroll(cref("bob"))]
        );
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (2, 0));
    }

    #[test]
    fn the_selector_matches_only_user_subjects_and_no_selector_matches_all() {
        let contacts = arcs(vec![
            contact("user", NEW, Some("User")),
            contact("robot", NEW, Some("ServiceAccount")),
            contact("nobody", NEW, None),
        ]);
        let users = plan(&policy(false, true), &contacts, Store::default());
        assert_eq!(users.steps, [Step::Enroll(cref("user"))]);
        let all = plan(&policy(false, false), &contacts, Store::default());
        assert_eq!(all.steps.len(), 3);
    }

    #[test]
    fn contacts_older_than_the_policy_need_backfill() {
        let mut undated = contact("undated", OLD, None);
        undated.metadata.creation_timestamp = None;
        let contacts = arcs(vec![contact("old", OLD, None), undated]);
        let plain = plan(&policy(false, false), &contacts, Store::default());
        assert_eq!(plain.steps, [Step::Enroll(cref("undated"))]);
        let backfill = plan(&policy(true, false), &contacts, Store::default());
        assert_eq!(backfill.steps.len(), 2);
    }

    const SAME_SECOND: &str = "2026-05-01T00:00:00Z";

    #[test]
    fn in_the_policys_own_second_the_views_order_decides_both_ways() {
        let mut store = Store::default();
        store.apply_contact(&contact("before", SAME_SECOND, None));
        let p = policy(false, false);
        store.apply_policy(&p);
        store.apply_contact(&contact("after", SAME_SECOND, None));
        let boundary = Boundary::decide(&p, &store);
        assert_eq!(boundary.list(), ["ns/before"]);
        let decided = super::plan_with(&p, &store, &boundary, |_| None);
        assert_eq!(decided.steps, [Step::Enroll(cref("after"))]);
        let backfill = policy(true, false);
        assert_eq!(super::plan(&backfill, &store).steps.len(), 2);
    }

    #[test]
    fn a_recorded_boundary_survives_a_view_that_cannot_order() {
        // A new leader lists everything at once: the view's order says nothing, so the policy's
        // status decides.
        let mut p = policy(false, false);
        p.status = Some(
            crate::api::notification::ContactGroupEnrollmentPolicyStatus {
                same_second_contacts: Some(vec!["ns/before".into()]),
                ..Default::default()
            },
        );
        let mut store = Store::default();
        store.set_listing(crate::view::ViewKind::EnrollmentPolicy, true);
        store.apply_policy(&p);
        store.apply_contact(&contact("after", SAME_SECOND, None));
        store.apply_contact(&contact("before", SAME_SECOND, None));
        assert_eq!(super::plan(&p, &store).steps, [Step::Enroll(cref("after"))]);
        // Undecided and first seen in a relist: every contact of that second may have existed.
        p.status = None;
        assert!(super::plan(&p, &store).steps.is_empty());
        assert_eq!(
            Boundary::decide(&p, &store).list(),
            ["ns/after", "ns/before"]
        );
    }

    #[test]
    fn contacts_being_deleted_are_left_alone() {
        let mut leaving = contact("leaving", NEW, None);
        leaving.metadata.deletion_timestamp = at(NEW);
        let plan = plan(&policy(true, false), &arcs(vec![leaving]), Store::default());
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_recorded_contact_is_done_even_without_its_membership_and_is_counted() {
        let contacts = arcs(vec![
            recorded(contact("a", NEW, None), POLICY, "enrolled"),
            recorded(contact("b", NEW, None), POLICY, "opted-out"),
            recorded(contact("c", NEW, None), POLICY, "already-member"),
            recorded(contact("d", NEW, None), POLICY, "something-newer"),
            recorded(contact("e", NEW, None), "another-policy", "enrolled"),
        ]);
        let plan = plan(&policy(false, false), &contacts, Store::default());
        assert_eq!(plan.steps, [Step::Enroll(cref("e"))]);
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (2, 1));
    }

    #[test]
    fn records_remembered_in_process_count_as_recorded() {
        let contacts = arcs(vec![contact("a", NEW, None), contact("b", NEW, None)]);
        let plan = plan_with(&policy(false, false), &contacts, Store::default(), |c| {
            (c.name == "a").then_some(Record::OptedOut)
        });
        assert_eq!(plan.steps, [Step::Enroll(cref("b"))]);
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (1, 1));
    }

    #[test]
    fn opt_outs_win_over_everything_else() {
        let mut store = Store::default();
        with_removal(&mut store, "a");
        let ours = names::enrollment_membership(POLICY, "a");
        with_membership(&mut store, &ours, "a");
        let plan = plan(
            &policy(false, false),
            &arcs(vec![contact("a", NEW, None)]),
            store,
        );
        assert_eq!(plan.steps, [Step::Record(cref("a"), Record::OptedOut)]);
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (0, 1));
    }

    #[test]
    fn an_existing_membership_is_recorded_not_duplicated() {
        let mut store = Store::default();
        with_membership(&mut store, "by-hand", "a");
        with_membership(&mut store, &names::enrollment_membership(POLICY, "b"), "b");
        let contacts = arcs(vec![contact("a", NEW, None), contact("b", NEW, None)]);
        let plan = plan(&policy(false, false), &contacts, store);
        assert_eq!(
            plan.steps,
            [
                Step::Record(cref("a"), Record::AlreadyMember),
                Step::Record(cref("b"), Record::Enrolled),
            ]
        );
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (1, 0));
    }

    /// Our membership holding the finalizer is the record: counted, nothing written, also while
    /// it is being deleted (its finalizer writes the annotation before it goes).
    #[test]
    fn a_membership_holding_the_finalizer_is_the_record() {
        let mut store = Store::default();
        with_held_membership(
            &mut store,
            &names::enrollment_membership(POLICY, "a"),
            "a",
            false,
        );
        with_held_membership(
            &mut store,
            &names::enrollment_membership(POLICY, "b"),
            "b",
            true,
        );
        // Another policy's membership with the finalizer is not ours: already a member.
        with_held_membership(&mut store, "other-policy-c", "c", false);
        let contacts = arcs(vec![
            contact("a", NEW, None),
            contact("b", NEW, None),
            contact("c", NEW, None),
        ]);
        let plan = plan(&policy(false, false), &contacts, store);
        assert_eq!(plan.steps, [Step::Record(cref("c"), Record::AlreadyMember)]);
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (2, 0));
    }

    #[test]
    fn settling_moves_counts_to_the_actual_outcome() {
        let mut plan = Plan {
            enrolled: 3,
            ..Plan::default()
        };
        plan.settle(Record::Enrolled, Some(Record::Enrolled));
        plan.settle(Record::Enrolled, Some(Record::OptedOut));
        plan.settle(Record::Enrolled, Some(Record::AlreadyMember));
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (1, 1));
        plan.settle(Record::OptedOut, None);
        assert_eq!((plan.enrolled, plan.skipped_opt_out), (1, 0));
    }

    #[test]
    fn record_keys_fit_for_any_policy_name() {
        assert_eq!(
            record_key("newsletter"),
            "policy.enrollment.notification.miloapis.com/newsletter"
        );
        let long = record_key(&"p".repeat(253));
        let name_part = long.strip_prefix(RECORD_PREFIX).unwrap();
        assert!(name_part.len() <= names::MAX_LABEL, "{long}");
        for record in [Record::Enrolled, Record::OptedOut, Record::AlreadyMember] {
            assert_eq!(Record::parse(record.as_str()), Some(record));
            let value = record.value(Some("uid-1"));
            assert_eq!(
                Record::recorded_for(&value, Some("uid-1")),
                Some(Some(record))
            );
            assert_eq!(
                Record::recorded_for(&value, Some("uid-2")),
                None,
                "another policy's"
            );
            assert_eq!(
                Record::recorded_for(record.as_str(), Some("uid-2")),
                Some(Some(record))
            );
        }
    }
}
