//! EmailBroadcast delivery: the email controller's second loop. At `spec.scheduledAt` (at once
//! when unset) the template goes to every member of the group who has no removal of the pair and
//! whose Contact is neither suppressed nor unsubscribed, one mail per recipient with their own
//! variables, in batches of up to 100 through `POST /emails/batch`.
//!
//! Exactly once across crashes: members are sent in a fixed order (Contact namespace, then
//! name). Before a batch goes out its range and idempotency key (`<uid>-<index>`) are recorded
//! in `status.pendingBatch`; after the send one status write moves the cursor
//! (`status.sentThrough`) to the range's end together with the counts (the record stays, as the
//! last batch, so indexes and keys never repeat; it is pending while the cursor is before its end). A sender that restarts with
//! a batch recorded and not confirmed sends that range again under the same key: Resend answers a
//! repeat of the same payload with the first answer (nothing sent twice), and a 409
//! `invalid_idempotent_request` (the range's members changed, but the key was used) means the
//! batch went out, so the cursor moves on. A crash before the record only loses the plan.
//!
//! Status by server-side apply under [`FIELD_MANAGER`], always the whole of what the sender
//! owns: `Ready` (`CreatePending` with the progress while sending, `CreateSuccessful` when done,
//! False `UnsubscribeNotConfigured` / `TemplateInvalid` / `SendFailed`), the counts, the cursor
//! and the batch in flight. Deleting the broadcast stops it before the next batch.

pub mod batch;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::{Value, json};

use super::render::{Parsed, Sender};
use super::{EmailSettings, UnsubscribeLinks};
use crate::api::broadcast::{EmailBroadcastStatus, PendingBatch};
use crate::api::common::sync::{SUPPRESSED, UNSUBSCRIBED};
use crate::api::notification::Visibility;
use crate::api::{Contact, ContactGroup, EmailBroadcast, EmailTemplate};
use crate::controllers::resend::topics;
use crate::controllers::runner::{self, Driver};
use crate::controllers::{Action, Context, ControllerKind, Error, ObjectKey, kubeapi};
use crate::providers::resend::{ResendClient, ResendError};
use crate::server::unsubscribe::Named;
use crate::view::broadcasts::{
    CRD_FIELDS_MISSING, CREATE_PENDING, CREATE_SUCCESSFUL, READY, SEND_FAILED, TEMPLATE_INVALID,
    UNSUBSCRIBE_NOT_CONFIGURED, broadcast_settled,
};
use crate::view::{Store, ViewKind};
use batch::{Audience, Mailing, Plan};

/// Field manager of the broadcast sender's status writes.
pub const FIELD_MANAGER: &str = "milo-webhook-broadcast";

/// Contacts read from the API server at once while a batch is assembled.
pub const CONTACT_READS: usize = 16;

/// What the broadcast loop needs.
pub struct BroadcastSender {
    ctx: Arc<Context>,
    client: ResendClient,
    sender: Sender,
    links: Option<UnsubscribeLinks>,
}

impl BroadcastSender {
    /// A broadcast sender through `client` with the email settings' addresses and links.
    pub fn new(ctx: Arc<Context>, client: ResendClient, settings: EmailSettings) -> Self {
        Self {
            ctx,
            client,
            sender: Sender {
                from: settings.from.unwrap_or_default(),
                reply_to: settings.reply_to,
            },
            links: settings.unsubscribe,
        }
    }
}

fn needs_send(view: &Store, namespace: &str, name: &str) -> bool {
    view.broadcast_state(namespace, name)
        .is_some_and(|b| b.needs_send())
}

/// Runs the broadcast loop until aborted (leadership lost).
pub async fn run(sender: Arc<BroadcastSender>) {
    let ctx = sender.ctx.clone();
    let feeds = runner::kind_feeds(ViewKind::EmailBroadcast, needs_send, runner::unrelated);
    let driver = Driver::new(
        &ctx,
        ControllerKind::Email,
        &[ViewKind::EmailBroadcast],
        feeds,
    );
    let sender = &sender;
    runner::drive(&ctx.view, driver, |key| async move {
        let label = format!("emailbroadcast/{key}");
        let work = reconcile(sender, &key);
        crate::controllers::reconcile_or_retry(&sender.ctx, ControllerKind::Email, label, work)
            .await
    })
    .await;
}

/// What the sender owns of a broadcast's status, written whole each time.
#[derive(Clone, Debug, Default)]
struct Progress {
    generation: Option<i64>,
    sent: i64,
    skipped: i64,
    failed: i64,
    sent_through: Option<String>,
    /// The last batch recorded, kept in every write (also once it is done), so the next batch's
    /// index, and so its key, never repeats one used before.
    last_batch: Option<PendingBatch>,
}

impl Progress {
    /// Progress as the status records it for `generation` (nothing for an older one).
    fn read(status: &EmailBroadcastStatus, generation: Option<i64>) -> Self {
        if status.observed_generation != generation {
            return Self {
                generation,
                ..Self::default()
            };
        }
        Self {
            generation,
            sent: status.recipients_sent,
            skipped: status.recipients_skipped,
            failed: status.recipients_failed,
            sent_through: status.sent_through.clone(),
            last_batch: status.pending_batch.clone(),
        }
    }

    /// The recorded batch not yet confirmed, if any: the cursor is before its end.
    fn pending(&self) -> Option<&PendingBatch> {
        self.last_batch
            .as_ref()
            .filter(|p| batch::is_pending(p, self.sent_through.as_deref()))
    }

    /// The index of the next batch to plan.
    fn next_index(&self) -> i64 {
        self.last_batch.as_ref().map_or(0, |p| p.index + 1)
    }

    fn status(&self, ready: Value) -> Value {
        let mut status = json!({
            "conditions": [ready],
            "recipientsSent": self.sent,
            "recipientsSkipped": self.skipped,
            "recipientsFailed": self.failed,
        });
        if let Some(generation) = self.generation {
            status["observedGeneration"] = json!(generation);
        }
        if let Some(cursor) = &self.sent_through {
            status["sentThrough"] = json!(cursor);
        }
        if let Some(last) = &self.last_batch {
            status["pendingBatch"] = json!(last);
        }
        status
    }

    fn ready(&self, status: &str, reason: &str, message: &str) -> Value {
        ready(status, reason, message, self.generation)
    }
}

/// A `Ready` condition as of now.
fn ready(status: &str, reason: &str, message: &str, generation: Option<i64>) -> Value {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let mut condition = json!({
        "type": READY, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now.to_string(),
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = json!(generation);
    }
    condition
}

/// Whether `conditions` already say `reason` for `generation` (so it is not written again).
fn says(conditions: &[Condition], reason: &str, generation: Option<i64>) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.reason == reason && c.observed_generation == generation)
}

/// Applies the sender's status of the broadcast `name`.
async fn apply_status(
    ctx: &Context,
    api: &Api<EmailBroadcast>,
    name: &str,
    status: Value,
) -> Result<(), Error> {
    Ok(kubeapi::apply_status_as(&ctx.schemas, api, name, status, FIELD_MANAGER).await?)
}

/// The status fields exactly-once sending records its progress in: without them a restart (or
/// any reconcile) would start the broadcast over.
const BOOKKEEPING: &[&str] = &[
    "status.observedGeneration",
    "status.pendingBatch",
    "status.sentThrough",
];

/// Sends what is left of one broadcast, batch by batch.
async fn reconcile(sender: &BroadcastSender, key: &ObjectKey) -> Result<Action, Error> {
    let ctx = &sender.ctx;
    let Some(state) = ctx.view.read().broadcast_state(&key.namespace, &key.name) else {
        return Ok(Action::await_change());
    };
    if !state.needs_send() {
        return Ok(Action::await_change());
    }
    if let Some(at) = state.scheduled_at {
        let wait = at - jiff::Timestamp::now().as_second();
        if wait > 0 {
            return Ok(Action::requeue(Duration::from_secs(wait.unsigned_abs())));
        }
    }
    let api: Api<EmailBroadcast> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let Some(broadcast) = kubeapi::get(&api, &key.name).await? else {
        return Ok(Action::await_change());
    };
    let generation = broadcast.metadata.generation;
    let status = broadcast.status.clone().unwrap_or_default();
    if broadcast.metadata.deletion_timestamp.is_some()
        || broadcast_settled(&status.conditions, generation)
    {
        return Ok(Action::await_change());
    }
    let missing = ctx.schemas.missing("EmailBroadcast", BOOKKEEPING);
    if !missing.is_empty() {
        let progress = Progress::read(&status, generation);
        if !says(&status.conditions, CRD_FIELDS_MISSING, generation) {
            let message = format!(
                "the installed EmailBroadcast CRD does not declare {}, which keep a broadcast from being sent twice: nothing is sent until `{}`",
                missing.join(", "),
                crate::controllers::schemas::FIX,
            );
            let ready = progress.ready("False", CRD_FIELDS_MISSING, &message);
            apply_status(ctx, &api, &key.name, progress.status(ready)).await?;
        }
        return Ok(Action::await_change());
    }
    let uid = broadcast.metadata.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        return Err(Error::Invalid(
            "the EmailBroadcast has no uid to key its batches".into(),
        ));
    }
    let mut progress = Progress::read(&status, generation);
    let group_ref = &broadcast.spec.contact_group_ref;
    let groups: Api<ContactGroup> = Api::namespaced(ctx.client.clone(), &group_ref.namespace);
    let Some(group) = kubeapi::get(&groups, &group_ref.name).await? else {
        return Err(Error::Invalid(format!(
            "ContactGroup {}/{} not found",
            group_ref.namespace, group_ref.name
        )));
    };
    let public = group.spec.visibility == Visibility::Public;
    let topic_id = match public {
        true => topics::find(&sender.client, &group_ref.namespace, &group_ref.name).await?,
        false => None,
    };
    let audience = Audience {
        group: Named {
            namespace: group_ref.namespace.clone(),
            name: group_ref.name.clone(),
            uid: group.metadata.uid.clone().unwrap_or_default(),
        },
        public,
        topic_id,
    };
    if audience.public && sender.links.is_none() {
        if !says(&status.conditions, UNSUBSCRIBE_NOT_CONFIGURED, generation) {
            let message = "the group is public and one-click unsubscribe is not configured (--unsubscribe-signing-key-file and --unsubscribe-base-url): nothing is sent without an unsubscribe link";
            let ready = progress.ready("False", UNSUBSCRIBE_NOT_CONFIGURED, message);
            apply_status(ctx, &api, &key.name, progress.status(ready)).await?;
        }
        return Ok(Action::await_change());
    }
    let templates: Api<EmailTemplate> = Api::all(ctx.client.clone());
    let template_name = &broadcast.spec.template_ref.name;
    let Some(template) = kubeapi::get(&templates, template_name).await? else {
        return Err(Error::Invalid(format!(
            "EmailTemplate {template_name} not found"
        )));
    };
    let parsed = match Parsed::parse(&template.spec) {
        Ok(parsed) => parsed,
        Err(message) => {
            let ready = progress.ready("False", TEMPLATE_INVALID, &message);
            apply_status(ctx, &api, &key.name, progress.status(ready)).await?;
            return Ok(Action::await_change());
        }
    };
    let mailing = Mailing {
        template: &parsed,
        audience: &audience,
        links: sender.links.as_ref(),
        namespace: &key.namespace,
        sender: &sender.sender,
    };
    let contacts = Contacts {
        client: ctx.client.clone(),
    };
    loop {
        // Deleting the broadcast stops it here, before the next batch.
        let deleting = ctx
            .view
            .read()
            .broadcast_state(&key.namespace, &key.name)
            .is_none_or(|b| b.deleting);
        if deleting {
            return Ok(Action::await_change());
        }
        let members = ctx
            .view
            .read()
            .broadcast_members(&group_ref.namespace, &group_ref.name);
        let total = progress.sent + members.iter().filter(|m| m.skip.is_none()).count() as i64;
        let (plan, pending, replay) = match progress.pending().cloned() {
            Some(pending) => (batch::replan(&members, &pending), pending, true),
            None => {
                let cursor = progress.sent_through.as_deref();
                let Some(plan) = batch::next_batch(&members, cursor) else {
                    return finish(ctx, &api, &key.name, &mut progress, &members).await;
                };
                let index = progress.next_index();
                let pending = PendingBatch {
                    index,
                    key: format!("{uid}-{index}"),
                    first_contact: plan.first.clone(),
                    last_contact: plan.last.clone(),
                    recipients: plan.recipients.len() as i64,
                    skipped: plan.skipped,
                };
                progress.last_batch = Some(pending.clone());
                let message = format!(
                    "sending batch {}: {} of about {total} recipients sent",
                    pending.index + 1,
                    progress.sent
                );
                let ready = progress.ready("Unknown", CREATE_PENDING, &message);
                apply_status(ctx, &api, &key.name, progress.status(ready)).await?;
                (plan, pending, false)
            }
        };
        let outcome = send(sender, &contacts, &mailing, &plan, &pending, replay).await?;
        progress.sent += outcome.sent;
        progress.skipped += outcome.skipped;
        progress.failed += outcome.failed;
        progress.sent_through = Some(plan.last.clone());
        let message = format!(
            "{} of about {total} recipients sent, {} skipped, {} failed",
            progress.sent, progress.skipped, progress.failed
        );
        let ready = progress.ready("Unknown", CREATE_PENDING, &message);
        apply_status(ctx, &api, &key.name, progress.status(ready)).await?;
    }
}

/// Records the end: the members passed over after the last batch, and `Ready` True (False
/// `SendFailed` when the provider refused every recipient).
async fn finish(
    ctx: &Context,
    api: &Api<EmailBroadcast>,
    name: &str,
    progress: &mut Progress,
    members: &[crate::view::broadcasts::Member],
) -> Result<Action, Error> {
    progress.skipped += batch::skipped_after(members, progress.sent_through.as_deref());
    if let Some(last) = members.last() {
        progress.sent_through = Some(last.key());
    }
    let message = format!(
        "{} recipients sent, {} skipped (opted out, suppressed or unsubscribed), {} failed",
        progress.sent, progress.skipped, progress.failed
    );
    let ready = if progress.sent == 0 && progress.failed > 0 {
        progress.ready("False", SEND_FAILED, &message)
    } else {
        progress.ready("True", CREATE_SUCCESSFUL, &message)
    };
    apply_status(ctx, api, name, progress.status(ready)).await?;
    tracing::info!(broadcast = name, %message, "broadcast done");
    Ok(Action::await_change())
}

/// What one batch came to.
#[derive(Debug, Default)]
struct Outcome {
    sent: i64,
    skipped: i64,
    failed: i64,
}

/// Reads Contacts from the API server (names are not in the view).
struct Contacts {
    client: kube::Client,
}

impl Contacts {
    /// The plan's Contacts, in its order, `CONTACT_READS` at a time; `None` for one gone.
    async fn read(&self, plan: &Plan) -> Result<Vec<Option<Contact>>, Error> {
        // Owned futures in a Vec: a stream over a borrowing closure would make the reconcile's
        // future not `Send` for every lifetime, which spawning needs.
        let reads: Vec<_> = plan
            .recipients
            .iter()
            .map(|r| {
                let api: Api<Contact> = Api::namespaced(self.client.clone(), &r.namespace);
                let name = r.name.clone();
                async move { kubeapi::get(&api, &name).await }
            })
            .collect();
        futures::stream::iter(reads)
            .buffered(CONTACT_READS)
            .map_err(Error::from)
            .try_collect()
            .await
    }
}

/// Whether a Contact read now is out of a broadcast's reach (the view may lag the API server).
fn excluded(contact: &Contact) -> bool {
    let conditions = contact.status.as_ref().map(|s| s.conditions.as_slice());
    conditions
        .unwrap_or_default()
        .iter()
        .any(|c| (c.type_ == SUPPRESSED || c.type_ == UNSUBSCRIBED) && c.status == "True")
        || contact.metadata.deletion_timestamp.is_some()
}

/// Sends one batch under its key. A 409 `invalid_idempotent_request` on the replay of a recorded
/// batch means it went out before (with other members in its range): counted as recorded.
async fn send(
    sender: &BroadcastSender,
    contacts: &Contacts,
    mailing: &Mailing<'_>,
    plan: &Plan,
    pending: &PendingBatch,
    replay: bool,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome {
        skipped: plan.skipped,
        ..Outcome::default()
    };
    let mut emails = Vec::with_capacity(plan.recipients.len());
    for contact in contacts.read(plan).await? {
        match contact {
            None => outcome.failed += 1,
            Some(contact) if excluded(&contact) => outcome.skipped += 1,
            Some(contact) => {
                let mut email = mailing.email_for(&contact);
                email.topic_id = mailing.audience.topic_id.clone();
                emails.push(email);
            }
        }
    }
    match sender.client.send_batch(&emails, &pending.key).await {
        Ok(ids) => outcome.sent = ids.len() as i64,
        // Only a replay's 409 means "sent before": on a fresh batch it would be a key clash,
        // an error to surface (retried with backoff), never a reason to skip anyone.
        Err(ResendError::Invalid { name, .. })
            if replay && name == "invalid_idempotent_request" =>
        {
            tracing::info!(key = %pending.key, "batch already sent under its key; moving on");
            return Ok(Outcome {
                sent: pending.recipients,
                skipped: pending.skipped,
                failed: 0,
            });
        }
        Err(error) if error.is_permanent() => {
            tracing::warn!(key = %pending.key, %error, "provider refused the batch");
            outcome.failed += emails.len() as i64;
        }
        Err(error) => return Err(Error::Provider(error)),
    }
    Ok(outcome)
}
