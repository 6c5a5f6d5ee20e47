//! Enrollment: every ContactGroupEnrollmentPolicy enrolls the contacts it selects into its group,
//! once. The root kind is the policy; a pass looks at every contact and acts on those the policy
//! has not recorded yet ([`plan`]), then carries the steps out here.
//!
//! Contacts, their creation times and record annotations come from the shared view's controller
//! fields (the leader's); this controller keeps no objects of its own. Every contact change, and
//! the view's group, membership and removal changes, re-run every policy after a debounce
//! (policies are few; a pass with nothing to do makes no request). A pass carries its steps out
//! through a window of `--enrollment-concurrency` writes in flight, reporting progress in the
//! policy's status and the log while it runs.
//!
//! Exactly-once, across retries, restarts, leader changes and several policies per group:
//! - memberships have deterministic names, so a replay gets AlreadyExists instead of a twin;
//! - the policy's membership is its record of the contact while it stands: it carries a
//!   finalizer ([`FINALIZER`]), and before it goes the membership controller writes the record
//!   annotation on the contact, so one write enrolls a contact and a crash at any point leaves
//!   either no membership (enrolled by the next pass) or a record;
//! - other outcomes (opted out, already a member) are recorded on the contact as an annotation;
//! - a recorded contact is never enrolled again, even after it leaves the group;
//! - passes of policies for the same group run one at a time, and a pass checks the view and the
//!   memberships this process created before creating, so a second policy sees the first's
//!   membership before the view does; the webhook's duplicate and opt-out denials count as done.

mod plan;
mod steps;

pub use plan::{
    Boundary, FINALIZER, POLICY_LABEL, POLICY_NAME_ANNOTATION, POLICY_UID_ANNOTATION, Plan,
    RECORD_PREFIX, Record, Step, applies, observed, plan, record_key,
};
pub use steps::membership;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired, READY};
use super::names;
use super::runner::{self, Driver, ObjectKey};
use super::{
    Action, Context, ControllerKind, Error, instrumented, kubeapi, object_key, retry_after,
};
use crate::api::ObjectRef;
use crate::api::notification::{ContactGroup, ContactGroupEnrollmentPolicy};
use crate::view::{Store, ViewChange, ViewKind};
use steps::{Tally, carry_out, is_refusal, refusal_code};

/// Quiet time before a triggered pass runs, so a burst of contact or membership events (a
/// backfill's own writes, say) costs one pass per policy rather than one per event.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// How soon a policy whose group is missing looks again; the group's creation also wakes it.
pub const GROUP_MISSING_RETRY: Duration = Duration::from_secs(60);
/// How often a running pass reports progress (status counts and a log line).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Events per reason per pass: a backfill of many contacts reports its first ones as Events and
/// the rest only in status and metrics, rather than flooding the namespace with Events.
pub const EVENTS_PER_PASS: usize = 100;

/// What an enrollment reconcile needs beyond the shared [`Context`].
pub struct EnrollmentContext {
    /// What every controller shares.
    pub shared: Arc<Context>,
    memory: Memory,
}

/// What this process did that the view may not show yet. A new leader starts empty, which is
/// safe: by then the caches hold everything the old leader wrote.
#[derive(Default)]
struct Memory {
    /// (contact, group) → name of the membership this process created (or found existing).
    created: Mutex<HashMap<(ObjectRef, ObjectRef), String>>,
    /// One lock per group: passes of policies for the same group run one at a time.
    groups: Mutex<HashMap<ObjectRef, Arc<tokio::sync::Mutex<()>>>>,
}

/// The record annotations this process wrote that the view may not show yet, per policy: by
/// enrollment passes, and by the membership controller as a policy's membership goes (its
/// deletion may reach the view before the contact's new annotation does, and the contact must
/// not look unrecorded in between). Shared through [`Context`].
#[derive(Default)]
pub struct RecordMemory {
    recorded: Mutex<HashMap<String, HashMap<ObjectRef, Record>>>,
}

impl RecordMemory {
    /// Remembers that `record` was written on `contact` for `policy`.
    pub fn remember(&self, policy: &str, contact: &ObjectRef, record: Record) {
        locked(&self.recorded)
            .entry(policy.to_owned())
            .or_default()
            .insert(contact.clone(), record);
    }

    fn get(&self, policy: &str, contact: &ObjectRef) -> Option<Record> {
        locked(&self.recorded).get(policy)?.get(contact).copied()
    }

    /// Forgets the records of `policy` under annotation `key` that `store` now shows, as an
    /// annotation or as our membership holding the finalizer (or whose contact is gone).
    fn forget_shown(&self, store: &Store, policy: &str, key: &str) {
        if let Some(mine) = locked(&self.recorded).get_mut(policy) {
            mine.retain(|contact, _| {
                let ours = names::enrollment_membership(policy, &contact.name);
                store.contact(&contact.namespace, &contact.name).is_some()
                    && store
                        .contact_record(&contact.namespace, &contact.name, key)
                        .is_none()
                    && !store.membership_holds_record(&contact.namespace, &ours)
            });
        }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl EnrollmentContext {
    /// A context with no memory of earlier passes (a fresh leader).
    pub fn new(shared: Arc<Context>) -> Self {
        Self {
            shared,
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
        self.shared
            .enrollment_records
            .remember(policy, contact, record);
    }

    /// Forgets the memberships created in `group` that the view now shows.
    fn forget_created(&self, group: &ObjectRef) {
        let store = self.shared.view.read();
        locked(&self.memory.created).retain(|(contact, of), _| {
            of != group || store.memberships_of(contact, group).is_empty()
        });
    }

    /// Forgets the records of `policy` the view now shows (or whose contact is gone).
    fn forget_shown(&self, policy: &str, key: &str) {
        let store = self.shared.view.read();
        self.shared
            .enrollment_records
            .forget_shown(&store, policy, key);
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
    let group = &policy.spec.contact_group_ref;
    let group_key = object_key(Some(&group.namespace), &group.name);
    // Which contacts of the policy's own second existed before it: recorded once decided.
    let recorded = Boundary::recorded(policy);
    let boundary = (!policy.spec.backfill).then(|| {
        recorded
            .clone()
            .unwrap_or_else(|| Boundary::decide(policy, &ctx.shared.view.read()))
    });
    let list = boundary.as_ref().map(Boundary::list);
    let list = list.as_deref();
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
        write_status(ctx, policy, &ready, counts, list).await?;
        return Ok(Action::requeue(GROUP_MISSING_RETRY));
    }

    let lock = ctx.group_lock(group);
    let _one_pass_per_group = lock.lock().await;
    ctx.forget_created(group);
    let name = policy.name_any();
    let key = record_key(&name);
    let mut planned = {
        let store = ctx.shared.view.read();
        let boundary = boundary.clone().unwrap_or_default();
        let remembered = &ctx.shared.enrollment_records;
        plan::plan_with(policy, &store, &boundary, |c| remembered.get(&name, c))
    };
    ctx.forget_shown(&name, &key);

    let ready = Desired {
        type_: READY,
        status: true,
        reason: "Active",
        message: format!("enrolling contacts into {group_key}"),
    };
    // A boundary just decided from the view's order is written before anything is enrolled:
    // after a restart the view cannot tell the order again. (An empty one rides along with the
    // status at the end of the pass; nothing in it depends on the order.)
    if recorded.is_none() && boundary.as_ref().is_some_and(|b| !b.existing.is_empty()) {
        let current = policy.status.clone().unwrap_or_default();
        let counts = (current.contacts_enrolled, current.contacts_skipped_opt_out);
        write_status(ctx, policy, &ready, counts, list).await?;
    }
    let steps = std::mem::take(&mut planned.steps);
    let done = Tally::default();
    let mut progress = Progress::new(&steps);
    let mut refused = None;
    let mut failed = None;
    let window = ctx.shared.settings.enrollment_concurrency.max(1);
    let (key, done) = (&key, &done);
    let steps = &steps;
    let mut results = stream::iter(0..steps.len())
        .map(|i| async move {
            let step = &steps[i];
            let outcome = carry_out(ctx, policy, key, step, done).await;
            (step, outcome)
        })
        .buffer_unordered(window);
    let mut report = tokio::time::interval(PROGRESS_EVERY);
    report.tick().await;
    // The progress write runs beside the steps, never instead of them: awaiting it inline would
    // stop polling the steps' requests, whose answers hold the API client's slots until polled,
    // and with every slot held the write would wait for them forever.
    let mut reporting: Option<futures::future::BoxFuture<'_, Result<(), Error>>> = None;
    loop {
        tokio::select! {
            written = async { reporting.as_mut().expect("guarded").await }, if reporting.is_some() => {
                reporting = None;
                if let Err(error) = written {
                    tracing::warn!(%error, "cannot report enrollment progress");
                }
            }
            next = results.next() => {
                let Some((step, outcome)) = next else { break };
                progress.finished(step);
                match outcome {
                    Ok(outcome) => planned.settle(step.expected(), outcome),
                    // One contact the API refuses must not hold up every contact after it: go
                    // on, and fail the pass at the end so it is retried with backoff.
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
                    // The API is unwell: stop starting writes (those in flight are dropped, as
                    // a crash would; every step is safe to replay) and retry with backoff.
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            _ = report.tick() => {
                let (enrolled, skipped) = progress.counts(&planned);
                tracing::info!(
                    group = %group_key,
                    done = progress.done,
                    of = steps.len(),
                    enrolled,
                    skipped_opt_out = skipped,
                    "enrollment pass in progress"
                );
                if reporting.is_none() {
                    reporting = Some(Box::pin(write_status(ctx, policy, &ready, (enrolled, skipped), list)));
                }
            }
        }
    }
    drop(results);
    // A progress write still in flight lands before the final one, so counts never go back.
    if let Some(Err(error)) = futures::future::OptionFuture::from(reporting).await {
        tracing::warn!(%error, "cannot report enrollment progress");
    }
    if let Some(error) = failed {
        return Err(error);
    }
    if !steps.is_empty() {
        tracing::info!(
            group = %group_key,
            enrolled = done.enrolled(),
            skipped_opt_out = done.opted_out(),
            already_member = done.already_member(),
            refused = refused.is_some(),
            seconds = progress.started.elapsed().as_secs_f64(),
            "enrollment pass done"
        );
    }
    let counts = (planned.enrolled, planned.skipped_opt_out);
    write_status(ctx, policy, &ready, counts, list).await?;
    match refused {
        Some(error) => Err(error),
        None => Ok(Action::await_change()),
    }
}

/// How far a pass has come: the plan's counts assume every step done, so while it runs the
/// steps still pending are taken off.
struct Progress {
    started: Instant,
    done: usize,
    pending_enrolled: i64,
    pending_opted_out: i64,
}

impl Progress {
    fn new(steps: &[Step]) -> Self {
        let pending = |record| steps.iter().filter(|s| s.expected() == record).count() as i64;
        Self {
            started: Instant::now(),
            done: 0,
            pending_enrolled: pending(Record::Enrolled),
            pending_opted_out: pending(Record::OptedOut),
        }
    }

    fn finished(&mut self, step: &Step) {
        self.done += 1;
        match step.expected() {
            Record::Enrolled => self.pending_enrolled -= 1,
            Record::OptedOut => self.pending_opted_out -= 1,
            Record::AlreadyMember => {}
        }
    }

    /// (enrolled, skipped) as of now.
    fn counts(&self, planned: &Plan) -> (i64, i64) {
        (
            planned.enrolled - self.pending_enrolled,
            planned.skipped_opt_out - self.pending_opted_out,
        )
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

/// Server-side-applies the status when it differs from what the policy already reports;
/// `boundary` is the same-second boundary of a policy without backfill (see [`Boundary`]).
async fn write_status(
    ctx: &EnrollmentContext,
    policy: &ContactGroupEnrollmentPolicy,
    ready: &Desired<'_>,
    (enrolled, skipped): (i64, i64),
    boundary: Option<&[String]>,
) -> Result<(), Error> {
    let generation = policy.metadata.generation;
    let current = policy.status.as_ref();
    let up_to_date = current.is_some_and(|s| {
        s.observed_generation == generation
            && s.contacts_enrolled == enrolled
            && s.contacts_skipped_opt_out == skipped
            && s.same_second_contacts.as_deref() == boundary
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
    if let Some(boundary) = boundary {
        status["sameSecondContacts"] = json!(boundary);
    }
    let api = Api::<ContactGroupEnrollmentPolicy>::all(ctx.shared.client.clone());
    kubeapi::apply_status(&ctx.shared.schemas, &api, &policy.name_any(), status).await?;
    Ok(())
}

/// The policies a change in the view concerns: the policy itself when it changed, every policy
/// when a contact, group, membership or removal did (policies are few, and a pass with nothing
/// to do makes no request).
pub fn policies_to_wake(change: &ViewChange, store: &Store) -> Vec<ObjectKey> {
    match change {
        ViewChange::Applied(ViewKind::EnrollmentPolicy, _, name) => vec![ObjectKey::new("", name)],
        ViewChange::Applied(kind, ..) | ViewChange::Deleted(kind, ..)
            if matches!(
                kind,
                ViewKind::Contact
                    | ViewKind::ContactGroup
                    | ViewKind::Membership
                    | ViewKind::Removal
            ) =>
        {
            all_policies(store)
        }
        _ => Vec::new(),
    }
}

fn all_policies(store: &Store) -> Vec<ObjectKey> {
    store
        .policies()
        .iter()
        .map(|p| ObjectKey::new("", &p.name_any()))
        .collect()
}

/// Runs the enrollment controller until its task is aborted (on losing the lease). It starts
/// once the view holds every kind with the controllers' fields: a half-filled view would miss
/// removals, and opt-outs are sacred.
pub async fn run(ctx: Arc<Context>) {
    let ectx = Arc::new(EnrollmentContext::new(ctx.clone()));
    let driver = Driver {
        kind: ControllerKind::Enrollment,
        concurrency: ctx.settings.concurrency,
        resync: ctx.settings.resync,
        relists: &ViewKind::ALL,
        wake_delay: DEBOUNCE,
        sweep: all_policies,
        wake: policies_to_wake,
        depth: ctx.queue_depth(ControllerKind::Enrollment),
    };
    runner::drive(&ctx.view, driver, |key| {
        let ectx = ectx.clone();
        async move {
            let Some(policy) = ectx.shared.view.read().policy(&key.name) else {
                return Action::await_change();
            };
            match reconcile(policy.clone(), ectx.clone()).await {
                Ok(action) => action,
                Err(error) => error_policy(policy, &error, ectx),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::names;

    #[test]
    fn contacts_groups_memberships_removals_and_the_policy_itself_wake_policies() {
        let mut store = Store::default();
        for name in ["a", "b"] {
            let policy: ContactGroupEnrollmentPolicy = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"contactGroupRef": {"name": "news", "namespace": "groups"},
                    "trigger": {"type": "ContactCreated"}}
            }))
            .unwrap();
            store.apply_policy(&policy);
        }
        let applied = |kind| ViewChange::Applied(kind, "ns".into(), "x".into());
        let mut all = policies_to_wake(&applied(ViewKind::Contact), &store);
        all.sort();
        assert_eq!(all, [ObjectKey::new("", "a"), ObjectKey::new("", "b")]);
        for kind in [
            ViewKind::ContactGroup,
            ViewKind::Membership,
            ViewKind::Removal,
        ] {
            assert_eq!(
                policies_to_wake(&applied(kind), &store).len(),
                2,
                "{kind:?}"
            );
        }
        let one = ViewChange::Applied(ViewKind::EnrollmentPolicy, String::new(), "a".into());
        assert_eq!(policies_to_wake(&one, &store), [ObjectKey::new("", "a")]);
        assert!(policies_to_wake(&applied(ViewKind::User), &store).is_empty());
        assert!(policies_to_wake(&ViewChange::Relisted(ViewKind::User), &store).is_empty());
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
