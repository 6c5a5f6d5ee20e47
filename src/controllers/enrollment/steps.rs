//! Carrying out a plan's steps: the membership create, the record annotation, the Event and the
//! metrics for each contact, and the in-process checks that keep two policies for one group from
//! both creating.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{
    EVENTS_PER_PASS, EnrollmentContext, FINALIZER, POLICY_LABEL, POLICY_NAME_ANNOTATION,
    POLICY_UID_ANNOTATION, Record, Step, locked, observed,
};
use crate::api::ObjectRef;
use crate::api::notification::{
    Contact, ContactGroupEnrollmentPolicy, ContactGroupMembership, ContactGroupMembershipSpec,
};
use crate::controllers::{Error, kubeapi, names, object_key};
use crate::metrics::PolicyLabels;

/// Whether the API refused this one request for a reason of its own (a webhook denial, a bad
/// object), so the pass can go on with the next contact; not when it is unwell (5xx, throttling,
/// conflicts, transport), when the next request would most likely fail too.
pub(super) fn is_refusal(error: &kube::Error) -> bool {
    matches!(refusal_code(error), Some(400..=499))
        && !matches!(refusal_code(error), Some(408 | 409 | 429))
}

pub(super) fn refusal_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// What one pass recorded, for its log line and its Event budget.
#[derive(Default)]
pub(super) struct Tally {
    enrolled: AtomicUsize,
    opted_out: AtomicUsize,
    already_member: AtomicUsize,
}

impl Tally {
    pub(super) fn enrolled(&self) -> usize {
        self.enrolled.load(Ordering::Relaxed)
    }
    pub(super) fn opted_out(&self) -> usize {
        self.opted_out.load(Ordering::Relaxed)
    }
    pub(super) fn already_member(&self) -> usize {
        self.already_member.load(Ordering::Relaxed)
    }
}

/// Adds one to `counter`; the count including this one.
fn bump(counter: &AtomicUsize) -> usize {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// Carries out one step; the record written, or `None` when the contact vanished meanwhile.
pub(super) async fn carry_out(
    ctx: &EnrollmentContext,
    policy: &ContactGroupEnrollmentPolicy,
    key: &str,
    step: &Step,
    done: &Tally,
) -> Result<Option<Record>, Error> {
    let contact = step.contact();
    let policy_name = policy.name_any();
    let record = match step {
        Step::Record(_, record) => {
            let value = record.value(policy.uid().as_deref());
            if !write_record(ctx, contact, key, &value).await? {
                return Ok(None);
            }
            *record
        }
        Step::Enroll(contact) => match enroll(ctx, policy, key, contact).await? {
            Some(record) => record,
            None => return Ok(None),
        },
    };
    ctx.remember(&policy_name, contact, record);
    let group = &policy.spec.contact_group_ref;
    let (contact_key, group_key) = (
        object_key(Some(&contact.namespace), &contact.name),
        object_key(Some(&group.namespace), &group.name),
    );
    let labels = PolicyLabels {
        policy: policy_name,
    };
    let metrics = &ctx.shared.metrics.controllers;
    let (reason, action, note, count) = match record {
        Record::Enrolled => {
            metrics.enrollments.get_or_create(&labels).inc();
            let count = bump(&done.enrolled);
            let note = format!("enrolled contact {contact_key} into group {group_key}");
            ("Enrolled", "Enroll", note, count)
        }
        Record::OptedOut => {
            metrics.opt_out_skips.get_or_create(&labels).inc();
            let count = bump(&done.opted_out);
            let note =
                format!("contact {contact_key} opted out of group {group_key}; not enrolled");
            ("SkippedOptOut", "Skip", note, count)
        }
        Record::AlreadyMember => {
            bump(&done.already_member);
            tracing::debug!(contact = %contact_key, "contact already a member; recorded");
            return Ok(Some(record));
        }
    };
    tracing::debug!(contact = %contact_key, record = record.as_str(), "contact recorded");
    if count <= EVENTS_PER_PASS {
        let related = contact_reference(contact);
        publish(ctx, &policy.object_ref(&()), reason, action, note, related).await;
    }
    Ok(Some(record))
}

/// Enrolls `contact` unless the view, or this process's memory of what it created (which the view
/// may not show yet), already shows it opted out or a member; the outcome recorded, `None` when
/// the contact vanished.
///
/// One write enrolls: the membership is created with the enrollment finalizer, and while it
/// stands it is the policy's record of the contact (the membership controller writes the record
/// annotation before it lets the membership go). A leader that dies before the create leaves
/// nothing done, and one that dies after leaves the record: never a contact enrolled twice. Other
/// outcomes (a webhook's opt-out or duplicate denial, a membership found in place) are recorded
/// on the contact.
async fn enroll(
    ctx: &EnrollmentContext,
    policy: &ContactGroupEnrollmentPolicy,
    key: &str,
    contact: &ObjectRef,
) -> Result<Option<Record>, Error> {
    let (outcome, holds_record) = match seen(ctx, policy, contact) {
        Some(seen) => seen,
        None => create(ctx, policy, contact).await?,
    };
    if !holds_record {
        let value = outcome.value(policy.uid().as_deref());
        if !write_record(ctx, contact, key, &value).await? {
            return Ok(None);
        }
    }
    Ok(Some(outcome))
}

/// What the view, or this process's memory of what it created, already shows for the pair, and
/// whether that is our membership holding the record (the view shows its finalizer).
fn seen(
    ctx: &EnrollmentContext,
    policy: &ContactGroupEnrollmentPolicy,
    contact: &ObjectRef,
) -> Option<(Record, bool)> {
    let group = &policy.spec.contact_group_ref;
    let ours = names::enrollment_membership(&policy.name_any(), &contact.name);
    let pair = (contact.clone(), group.clone());
    let store = ctx.shared.view.read();
    if let Some(record) = observed(&store, contact, group, &ours) {
        let holds =
            record == Record::Enrolled && store.membership_holds_record(&contact.namespace, &ours);
        return Some((record, holds));
    }
    let created = locked(&ctx.memory.created);
    created.get(&pair).map(|name| {
        if *name == ours {
            (Record::Enrolled, false)
        } else {
            (Record::AlreadyMember, false)
        }
    })
}

/// Creates the membership; the outcome (a webhook's opt-out or duplicate denial is an outcome,
/// not an error), and whether a membership this create made holds the record. One found in place
/// under our name (a replay) may predate the finalizer, so its contact is recorded too.
async fn create(
    ctx: &EnrollmentContext,
    policy: &ContactGroupEnrollmentPolicy,
    contact: &ObjectRef,
) -> Result<(Record, bool), Error> {
    let group = &policy.spec.contact_group_ref;
    let ours = names::enrollment_membership(&policy.name_any(), &contact.name);
    let pair = (contact.clone(), group.clone());
    let api =
        Api::<ContactGroupMembership>::namespaced(ctx.shared.client.clone(), &contact.namespace);
    match kubeapi::create(&api, &membership(policy, contact, &ours)).await {
        Ok(created) => {
            tracing::debug!(membership = %object_key(Some(&contact.namespace), &ours), ?created, "membership created");
            locked(&ctx.memory.created).insert(pair, ours);
            Ok((Record::Enrolled, created == kubeapi::Created::New))
        }
        Err(error) => {
            let causes = kubeapi::denial_causes(&error);
            if causes.contains(&"FieldValueForbidden") {
                Ok((Record::OptedOut, false))
            } else if causes.contains(&"FieldValueDuplicate") {
                Ok((Record::AlreadyMember, false))
            } else {
                Err(error.into())
            }
        }
    }
}

/// The membership `policy` creates for `contact`: in the contact's namespace, labelled and
/// annotated with the policy (name and uid), holding the enrollment finalizer. No
/// ownerReferences: they cannot cross namespaces, and the membership controller deletes
/// memberships whose contact or group is gone.
pub fn membership(
    policy: &ContactGroupEnrollmentPolicy,
    contact: &ObjectRef,
    name: &str,
) -> ContactGroupMembership {
    let policy_name = policy.name_any();
    let mut membership = ContactGroupMembership::new(
        name,
        ContactGroupMembershipSpec {
            contact_ref: contact.clone(),
            contact_group_ref: policy.spec.contact_group_ref.clone(),
        },
    );
    let meta = &mut membership.metadata;
    meta.namespace = Some(contact.namespace.clone());
    meta.labels = Some(BTreeMap::from([(
        POLICY_LABEL.to_owned(),
        names::label_safe(&policy_name),
    )]));
    let mut annotations = BTreeMap::from([(POLICY_NAME_ANNOTATION.to_owned(), policy_name)]);
    if let Some(uid) = policy.uid() {
        annotations.insert(POLICY_UID_ANNOTATION.to_owned(), uid);
    }
    meta.annotations = Some(annotations);
    meta.finalizers = Some(vec![FINALIZER.to_owned()]);
    membership
}

/// Writes the record annotation; false when the contact is gone (nothing left to record).
async fn write_record(
    ctx: &EnrollmentContext,
    contact: &ObjectRef,
    key: &str,
    value: &str,
) -> Result<bool, Error> {
    let api = Api::<Contact>::namespaced(ctx.shared.client.clone(), &contact.namespace);
    let patch = json!({"metadata": {"annotations": {key: value}}});
    match kubeapi::merge_patch(&api, &contact.name, &patch).await {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::debug!(contact = %object_key(Some(&contact.namespace), &contact.name), "contact deleted before its record was written");
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

fn contact_reference(contact: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(Contact::api_version(&()).into_owned()),
        kind: Some(Contact::kind(&()).into_owned()),
        name: Some(contact.name.clone()),
        namespace: Some(contact.namespace.clone()),
        ..ObjectReference::default()
    }
}

/// Publishes an Event about the policy with the contact as its related object. The related
/// object matters beyond display: kube's recorder folds Events with the same regarding, reason
/// and related object into one series (keeping the first note), so without it every enrollment
/// after the first would only bump a counter on an Event naming the first contact. Cluster-scoped
/// policies have no namespace, so their Events go to `default`.
async fn publish(
    ctx: &EnrollmentContext,
    regarding: &ObjectReference,
    reason: &str,
    action: &str,
    note: String,
    related: ObjectReference,
) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: Some(related),
    };
    if let Err(error) = ctx.shared.events.publish(&event, regarding).await {
        tracing::warn!(%error, reason, "cannot publish event");
    }
}
