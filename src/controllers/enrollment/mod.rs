//! Enrollment: every ContactGroupEnrollmentPolicy enrolls the contacts it selects into its group,
//! once. The root kind is the policy; a pass looks at every contact and acts on those the policy
//! has not recorded yet ([`plan`]), then carries the steps out here.
//!
//! Contacts come from a reflector of this controller's own (leader only), because the view keeps
//! neither annotations nor creation timestamps; the reflector keeps only what enrollment reads
//! (see [`slim_contact`]). Every contact event, and the view's group, membership and removal
//! changes, re-run every policy (policies are few; a pass with nothing to do makes no request).
//!
//! Exactly-once, across retries, restarts, leader changes and several policies per group:
//! - memberships have deterministic names, so a replay gets AlreadyExists instead of a twin;
//! - the outcome is recorded on the contact (an annotation per policy) only after the membership
//!   exists, so a crash in between replays as AlreadyExists and is then recorded;
//! - a recorded contact is never enrolled again, even after it leaves the group;
//! - passes of policies for the same group run one at a time, and a pass checks the view and the
//!   memberships this process created before creating, so a second policy sees the first's
//!   membership before the view does; the webhook's duplicate and opt-out denials count as done.

mod plan;
mod steps;

pub use plan::{
    POLICY_LABEL, POLICY_NAME_ANNOTATION, Plan, RECORD_PREFIX, Record, Step, applies, observed,
    plan, record_key,
};
pub use steps::membership;

use crate::controllers::{log_run_result, until_synced};
use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired, READY};
use super::{
    Context, ControllerKind, Error, instrumented, kubeapi, object_key, retry_after, view_changes,
};
use crate::api::ObjectRef;
use crate::api::notification::{Contact, ContactGroup, ContactGroupEnrollmentPolicy};
use crate::view::{ViewChange, ViewKind};
use steps::{Tally, carry_out, is_refusal, refusal_code};

/// Quiet time before a triggered pass runs, so a burst of contact or membership events (a
/// backfill's own writes, say) costs one pass per policy rather than one per event.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// How soon a policy whose group is missing looks again; the group's creation also wakes it.
pub const GROUP_MISSING_RETRY: Duration = Duration::from_secs(60);
/// Events per reason per pass: a backfill of many contacts reports its first ones as Events and
/// the rest only in status and metrics, rather than flooding the namespace with Events.
pub const EVENTS_PER_PASS: usize = 100;

/// What an enrollment reconcile needs beyond the shared [`Context`].
pub struct EnrollmentContext {
    /// What every controller shares.
    pub shared: Arc<Context>,
    /// Every Contact, slimmed to what enrollment reads (see [`slim_contact`]).
    pub contacts: reflector::Store<Contact>,
    memory: Memory,
}

/// What this process did that the caches may not show yet. A new leader starts empty, which is
/// safe: by then the caches hold everything the old leader wrote.
#[derive(Default)]
struct Memory {
    /// (contact, group) → name of the membership this process created (or found existing).
    created: Mutex<HashMap<(ObjectRef, ObjectRef), String>>,
    /// policy → contact → record written, until the contact store shows the annotation.
    recorded: Mutex<HashMap<String, HashMap<ObjectRef, Record>>>,
    /// One lock per group: passes of policies for the same group run one at a time.
    groups: Mutex<HashMap<ObjectRef, Arc<tokio::sync::Mutex<()>>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl EnrollmentContext {
    /// A context over `contacts`, with no memory of earlier passes (a fresh leader).
    pub fn new(shared: Arc<Context>, contacts: reflector::Store<Contact>) -> Self {
        Self {
            shared,
            contacts,
            memory: Memory::default(),
        }
    }

    fn group_lock(&self, group: &ObjectRef) -> Arc<tokio::sync::Mutex<()>> {
        locked(&self.memory.groups)
            .entry(group.clone())
            .or_default()
            .clone()
    }

    fn remember(&self, policy: &str, contact: &ObjectRef, record: Record) {
        locked(&self.memory.recorded)
            .entry(policy.to_owned())
            .or_default()
            .insert(contact.clone(), record);
    }

    /// Forgets the memberships created in `group` that the view now shows.
    fn forget_created(&self, group: &ObjectRef) {
        let store = self.shared.view.read();
        locked(&self.memory.created).retain(|(contact, of), _| {
            of != group || store.memberships_of(contact, group).is_empty()
        });
    }

    /// Forgets the records of `policy` the contact store now shows (or whose contact is gone).
    fn forget_shown(&self, policy: &str, key: &str) {
        let mut recorded = locked(&self.memory.recorded);
        if let Some(mine) = recorded.get_mut(policy) {
            mine.retain(|contact, _| {
                let at = reflector::ObjectRef::new(&contact.name).within(&contact.namespace);
                self.contacts
                    .get(&at)
                    .is_some_and(|c| !c.annotations().contains_key(key))
            });
        }
    }
}

/// Runs one pass of `policy`: enrolls what is left to enroll and updates its status.
pub async fn reconcile(
    policy: Arc<ContactGroupEnrollmentPolicy>,
    ctx: Arc<EnrollmentContext>,
) -> Result<Action, Error> {
    let key = object_key(None, &policy.name_any());
    instrumented(
        &ctx.shared,
        ControllerKind::Enrollment,
        key,
        pass(&policy, &ctx),
    )
    .await
}

/// The shared error policy: conflicts at once, anything else with per-policy backoff.
pub fn error_policy(
    policy: Arc<ContactGroupEnrollmentPolicy>,
    error: &Error,
    ctx: Arc<EnrollmentContext>,
) -> Action {
    retry_after(
        &ctx.shared,
        ControllerKind::Enrollment,
        &object_key(None, &policy.name_any()),
        error,
    )
}

async fn pass(
    policy: &ContactGroupEnrollmentPolicy,
    ctx: &EnrollmentContext,
) -> Result<Action, Error> {
    if policy.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.contacts
        .wait_until_ready()
        .await
        .map_err(|_| Error::Invalid("the contact watch stopped before its first list".into()))?;
    let group = &policy.spec.contact_group_ref;
    let group_key = object_key(Some(&group.namespace), &group.name);
    if !group_exists(ctx, group).await? {
        tracing::info!(group = %group_key, "contact group not found; waiting for it");
        let current = policy.status.clone().unwrap_or_default();
        let ready = Desired {
            type_: READY,
            status: false,
            reason: "ContactGroupNotFound",
            message: format!("contact group {group_key} does not exist"),
        };
        let counts = (current.contacts_enrolled, current.contacts_skipped_opt_out);
        write_status(ctx, policy, &ready, counts).await?;
        return Ok(Action::requeue(GROUP_MISSING_RETRY));
    }

    let lock = ctx.group_lock(group);
    let _one_pass_per_group = lock.lock().await;
    ctx.forget_created(group);
    let name = policy.name_any();
    let key = record_key(&name);
    let contacts = ctx.contacts.state();
    let mut planned = {
        let recorded = locked(&ctx.memory.recorded);
        let mine = recorded.get(&name);
        let store = ctx.shared.view.read();
        plan::plan_with(policy, &contacts, &store, |c| mine?.get(c).copied())
    };
    drop(contacts);
    ctx.forget_shown(&name, &key);

    let mut done = Tally::default();
    let mut refused = None;
    let steps = std::mem::take(&mut planned.steps);
    for step in &steps {
        match carry_out(ctx, policy, &key, step, &mut done).await {
            Ok(outcome) => planned.settle(step.expected(), outcome),
            // One contact the API refuses must not hold up every contact after it: go on, and
            // fail the pass at the end so it is retried with backoff.
            Err(Error::Kube(error)) if is_refusal(&error) => {
                let contact = step.contact();
                tracing::warn!(
                    contact = %object_key(Some(&contact.namespace), &contact.name),
                    causes = ?kubeapi::denial_causes(&error),
                    code = refusal_code(&error),
                    "cannot enroll contact; going on with the others"
                );
                planned.settle(step.expected(), None);
                refused.get_or_insert(Error::Kube(error));
            }
            Err(error) => return Err(error),
        }
    }
    if !steps.is_empty() {
        tracing::info!(
            group = %group_key,
            enrolled = done.enrolled,
            skipped_opt_out = done.opted_out,
            already_member = done.already_member,
            refused = refused.is_some(),
            "enrollment pass done"
        );
    }
    let ready = Desired {
        type_: READY,
        status: true,
        reason: "Active",
        message: format!("enrolling contacts into {group_key}"),
    };
    let counts = (planned.enrolled, planned.skipped_opt_out);
    write_status(ctx, policy, &ready, counts).await?;
    match refused {
        Some(error) => Err(error),
        None => Ok(Action::requeue(ctx.shared.settings.resync)),
    }
}

/// The view may lag a group's creation; only the API server can say it is really missing.
async fn group_exists(ctx: &EnrollmentContext, group: &ObjectRef) -> Result<bool, Error> {
    let in_view = ctx
        .shared
        .view
        .read()
        .group(&group.namespace, &group.name)
        .is_some();
    if in_view {
        return Ok(true);
    }
    let api = Api::<ContactGroup>::namespaced(ctx.shared.client.clone(), &group.namespace);
    Ok(kubeapi::get(&api, &group.name).await?.is_some())
}

/// Server-side-applies the status when it differs from what the policy already reports.
async fn write_status(
    ctx: &EnrollmentContext,
    policy: &ContactGroupEnrollmentPolicy,
    ready: &Desired<'_>,
    (enrolled, skipped): (i64, i64),
) -> Result<(), Error> {
    let generation = policy.metadata.generation;
    let current = policy.status.as_ref();
    let up_to_date = current.is_some_and(|s| {
        s.observed_generation == generation
            && s.contacts_enrolled == enrolled
            && s.contacts_skipped_opt_out == skipped
            && conditions::is_current(&s.conditions, ready, generation)
    });
    if up_to_date {
        return Ok(());
    }
    let existing = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let condition = conditions::render(existing, ready, generation, jiff::Timestamp::now());
    let mut status = json!({
        "conditions": [condition],
        "contactsEnrolled": enrolled,
        "contactsSkippedOptOut": skipped,
    });
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }
    let api = Api::<ContactGroupEnrollmentPolicy>::all(ctx.shared.client.clone());
    kubeapi::apply_status(&api, &policy.name_any(), status).await?;
    Ok(())
}

/// Keeps in the contact reflector only what enrollment reads: names, uid, timestamps, our own
/// record annotations and the subject. Everything else (managedFields, other annotations, labels,
/// status, and the names and addresses, which this second cache has no use for) is dropped.
pub fn slim_contact(contact: &mut Contact) {
    let meta = &mut contact.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(RECORD_PREFIX));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    contact.spec.email = String::new();
    contact.spec.given_name = None;
    contact.spec.family_name = None;
    contact.status = None;
}

/// Whether a view change can make a policy's pass do something new.
fn wakes_enrollment(change: &ViewChange) -> bool {
    match change {
        ViewChange::Applied(kind, ..) | ViewChange::Deleted(kind, ..) => matches!(
            kind,
            ViewKind::ContactGroup | ViewKind::Membership | ViewKind::Removal
        ),
        ViewChange::Relisted(_) => true,
    }
}

/// Runs the enrollment controller until its task is aborted (on losing the lease). It starts
/// once the view has synced: a half-filled view would miss removals, and opt-outs are sacred.
pub async fn run(ctx: Arc<Context>) {
    until_synced(&ctx.view).await;
    let (contacts, writer) = reflector::store();
    let contact_changes = watcher(
        Api::<Contact>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim_contact)
    .reflect(writer)
    .filter_map(|event| {
        ready(match event {
            Ok(_) => Some(()),
            Err(error) => {
                tracing::warn!(%error, "contact watch failed; retrying with backoff");
                None
            }
        })
    });
    let view_triggers =
        view_changes(&ctx.view).filter_map(|change| ready(wakes_enrollment(&change).then_some(())));
    let policies = Api::<ContactGroupEnrollmentPolicy>::all(ctx.client.clone());
    let ectx = Arc::new(EnrollmentContext::new(ctx, contacts));
    tracing::info!("enrollment controller starting");
    Controller::new(policies, watcher::Config::default())
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .reconcile_all_on(contact_changes)
        .reconcile_all_on(view_triggers)
        .run(reconcile, error_policy, ectx)
        .for_each(|result| {
            log_run_result(ControllerKind::Enrollment, result);
            ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::notification::ContactSpec;
    use crate::controllers::names;
    use std::collections::BTreeMap;

    #[test]
    fn the_contact_store_keeps_only_what_enrollment_reads() {
        let mut contact: Contact = serde_json::from_value(json!({
            "metadata": {"name": "alice", "namespace": "ns", "uid": "u1",
                "creationTimestamp": "2026-06-01T00:00:00Z",
                "labels": {"a": "b"},
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "policy.enrollment.notification.miloapis.com/newsletter": "enrolled"}},
            "spec": {"email": "alice@example.com", "givenName": "Alice",
                "subject": {"apiGroup": "iam.miloapis.com", "kind": "User", "name": "alice"}}
        }))
        .unwrap();
        slim_contact(&mut contact);
        assert_eq!(
            contact.annotations().keys().collect::<Vec<_>>(),
            [&record_key("newsletter")]
        );
        assert!(contact.metadata.managed_fields.is_none() && contact.metadata.labels.is_none());
        assert!(contact.creation_timestamp().is_some() && contact.uid().is_some());
        assert_eq!(contact.spec.email, "");
        assert_eq!(contact.spec.given_name, None);
        assert_eq!(contact.spec.subject.as_ref().unwrap().kind, "User");
        let mut bare = Contact::new("bob", ContactSpec::default());
        bare.metadata.annotations = Some(BTreeMap::from([("x".into(), "y".into())]));
        slim_contact(&mut bare);
        assert!(bare.metadata.annotations.is_none());
    }

    #[test]
    fn groups_memberships_removals_and_relists_wake_policies() {
        let applied = |kind| ViewChange::Applied(kind, "ns".into(), "x".into());
        assert!(wakes_enrollment(&applied(ViewKind::ContactGroup)));
        assert!(wakes_enrollment(&applied(ViewKind::Removal)));
        assert!(wakes_enrollment(&ViewChange::Deleted(
            ViewKind::Membership,
            "ns".into(),
            "m".into()
        )));
        assert!(wakes_enrollment(&ViewChange::Relisted(ViewKind::User)));
        assert!(!wakes_enrollment(&applied(ViewKind::User)));
        assert!(!wakes_enrollment(&applied(ViewKind::Contact)));
    }

    #[test]
    fn memberships_are_labelled_with_the_policy_and_never_owned() {
        let long = format!("{}.example", "p".repeat(100));
        let policy: ContactGroupEnrollmentPolicy = serde_json::from_value(json!({
            "metadata": {"name": long},
            "spec": {"contactGroupRef": {"name": "news", "namespace": "groups"},
                "trigger": {"type": "ContactCreated"}}
        }))
        .unwrap();
        let contact = ObjectRef {
            name: "alice".into(),
            namespace: "people".into(),
        };
        let name = names::enrollment_membership(&long, "alice");
        let m = membership(&policy, &contact, &name);
        assert_eq!(m.namespace().as_deref(), Some("people"));
        assert_eq!(m.spec.contact_ref, contact);
        assert_eq!(m.spec.contact_group_ref, policy.spec.contact_group_ref);
        let label = &m.labels()[POLICY_LABEL];
        assert!(label.len() <= names::MAX_LABEL && *label == names::label_safe(&long));
        assert_eq!(m.annotations()[POLICY_NAME_ANNOTATION], long);
        assert!(m.owner_references().is_empty());
    }
}
