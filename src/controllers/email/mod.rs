//! Email delivery (leader only, and only with a Resend client and `--email-from-address`): each
//! Email is rendered from its EmailTemplate and sent once through Resend.
//!
//! Exactly once: the send carries the HTTP `Idempotency-Key` header set to the Email's uid, and
//! what was sent is read back from the Email itself (`status.providerID`, or a `Delivered`
//! condition for its generation). A crash, a lost answer or a failed status write after the send
//! only means the next reconcile sends again under the same key, and Resend answers with the
//! first id instead of sending (within its 24 hours; the retry policy retries far sooner).
//!
//! Status as Milo's provider writes it, by server-side apply under [`FIELD_MANAGER`]:
//! `providerID`, `subject`, `htmlBody`, `textBody`, `emailAddress`, and `Delivered`
//! Unknown/`DeliveryPending` once Resend accepted it. Permanent refusals (unverified domain,
//! invalid recipient, an unrenderable template) are `Delivered` False `DeliveryFailed` with the
//! provider's message and are not retried until the Email changes; an address suppressed by a
//! hard bounce or complaint gets `Delivered` False `Suppressed` without a provider call.
//! Transient failures write nothing and back off. [`events`] moves `Delivered` on as Resend
//! reports delivery, and suppresses addresses.

pub mod broadcast;
pub mod events;
pub mod gate;
pub mod render;

use std::sync::Arc;

use kube::Api;
use serde_json::{Value, json};

use super::runner::{self, Driver};
use super::schemas::InstalledSchemas;
use super::{Action, Context, ControllerKind, Error, ObjectKey, kubeapi};
use crate::api::notification::EmailPriority;
use crate::api::{Email, EmailTemplate};
use crate::providers::resend::{ResendClient, ResendError};
use crate::view::emails::{DELIVERED, DELIVERY_FAILED, DELIVERY_PENDING, SUPPRESSED};
use crate::view::{Store, ViewKind};
use gate::PriorityGate;
use render::Sender;

/// Field manager of the sender's status writes, apart from the events' and other writers'.
pub const FIELD_MANAGER: &str = "milo-webhook-email";

/// The sender's settings (`--email-from-address`, `--email-reply-to-address`).
#[derive(Clone, Debug, Default)]
pub struct EmailSettings {
    /// `from` of every Email; without it the email controller does not run.
    pub from: Option<String>,
    /// `reply_to` of every Email, when set.
    pub reply_to: Option<String>,
    /// How one-click unsubscribe links are made (`--unsubscribe-signing-key-file`,
    /// `--unsubscribe-base-url`); without it no broadcast to a public group is sent.
    pub unsubscribe: Option<UnsubscribeLinks>,
}

/// What one-click unsubscribe links are made of.
#[derive(Clone, Debug)]
pub struct UnsubscribeLinks {
    /// The keys tokens are signed with (the signing key of the moment: they are reloaded when
    /// their files change).
    pub keys: std::sync::Arc<crate::server::unsubscribe::UnsubscribeKeys>,
    /// The public address of the events listener the links point at.
    pub base_url: String,
    /// How long a preference page link works (`--preferences-link-ttl`).
    pub preferences_ttl: std::time::Duration,
}

/// What the sender's three queues share.
pub struct EmailSender {
    ctx: Arc<Context>,
    client: ResendClient,
    sender: Sender,
    gate: PriorityGate,
}

impl EmailSender {
    /// A sender through `client` from `from`.
    pub fn new(ctx: Arc<Context>, client: ResendClient, sender: Sender) -> Self {
        Self {
            ctx,
            client,
            sender,
            gate: PriorityGate::new(gate::SLOTS),
        }
    }
}

/// Whether the Email `namespace/name` of `priority` waits for a send.
fn needs_send(view: &Store, namespace: &str, name: &str, priority: EmailPriority) -> bool {
    view.email_state(namespace, name)
        .is_some_and(|e| e.priority == priority && !e.sent && !e.deleting)
}

/// Runs the three priority queues until aborted (leadership lost).
pub async fn run(sender: Arc<EmailSender>) {
    tokio::join!(
        run_queue(sender.clone(), EmailPriority::High),
        run_queue(sender.clone(), EmailPriority::Normal),
        run_queue(sender, EmailPriority::Low),
    );
}

async fn run_queue(sender: Arc<EmailSender>, priority: EmailPriority) {
    let ctx = sender.ctx.clone();
    let needs = move |view: &Store, ns: &str, name: &str| needs_send(view, ns, name, priority);
    let feeds = runner::kind_feeds(ViewKind::Email, needs, runner::unrelated);
    let driver = Driver::new(&ctx, ControllerKind::Email, &[ViewKind::Email], feeds);
    let sender = &sender;
    runner::drive(&ctx.view, driver, |key| async move {
        let work = reconcile(sender, &key);
        super::reconcile_or_retry(&sender.ctx, ControllerKind::Email, key.to_string(), work).await
    })
    .await;
}

/// Sends one Email unless it was sent (or settled) for its generation.
async fn reconcile(sender: &EmailSender, key: &ObjectKey) -> Result<Action, Error> {
    let ctx = &sender.ctx;
    // The slot is taken before the reads, so a high-priority Email is waiting at the gate (not
    // reading its template) whenever a slot frees.
    let priority = ctx
        .view
        .read()
        .email_state(&key.namespace, &key.name)
        .map_or(EmailPriority::Normal, |e| e.priority);
    let _pass = sender.gate.enter(priority).await;
    let api: Api<Email> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let Some(email) = kubeapi::get(&api, &key.name).await? else {
        return Ok(Action::await_change());
    };
    let status = email.status.clone().unwrap_or_default();
    let generation = email.metadata.generation;
    let record = Record {
        schemas: &ctx.schemas,
        api: &api,
        name: &key.name,
        generation,
    };
    if email.metadata.deletion_timestamp.is_some()
        || status.provider_id.is_some()
        || crate::view::emails::delivery_settled(&status.conditions, generation)
    {
        return Ok(Action::await_change());
    }
    let uid = email.metadata.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        return Err(Error::Invalid(
            "the Email has no uid to key its send".into(),
        ));
    }
    let recipient = &email.spec.recipient;
    let address = match (&recipient.email_address, &recipient.user_ref) {
        (Some(address), _) => address.clone(),
        (None, Some(user)) => match ctx.view.read().user(&user.name) {
            Some(found) => found.email.to_owned(),
            None => return Err(Error::Invalid(format!("User {} not found", user.name))),
        },
        (None, None) => {
            let outcome = Failure::new(DELIVERY_FAILED, "the Email names no recipient".into());
            return record.finish(None, outcome).await;
        }
    };
    if ctx.view.read().email_suppressed(&address) {
        let message = format!(
            "not sent: {address} is suppressed (hard bounce or complaint); an operator removes the Contact's Suppressed condition to allow it again"
        );
        let outcome = Failure::new(SUPPRESSED, message);
        return record.finish(Some(&address), outcome).await;
    }
    let templates: Api<EmailTemplate> = Api::all(ctx.client.clone());
    let template_name = &email.spec.template_ref.name;
    let Some(template) = kubeapi::get(&templates, template_name).await? else {
        return Err(Error::Invalid(format!(
            "EmailTemplate {template_name} not found"
        )));
    };
    let rendered = match render::render(&template.spec, &email.spec) {
        Ok(rendered) => rendered,
        Err(message) => {
            let outcome = Failure::new(DELIVERY_FAILED, message);
            return record.finish(Some(&address), outcome).await;
        }
    };
    let outgoing = render::outgoing(
        &rendered,
        &address,
        &email.spec,
        &key.namespace,
        &sender.sender,
    );
    match sender.client.send_email(&outgoing, &uid).await {
        Ok(id) => {
            let status = json!({
                "providerID": id,
                "subject": rendered.subject,
                "htmlBody": rendered.html,
                "textBody": rendered.text,
                "emailAddress": address,
                "conditions": [delivered("Unknown", DELIVERY_PENDING,
                    "accepted by Resend; waiting for delivery", generation)],
            });
            record.apply(status).await?;
            Ok(Action::await_change())
        }
        Err(error) if error.is_permanent() => {
            let message = match &error {
                ResendError::Invalid { message, .. } if !message.is_empty() => message.clone(),
                other => other.to_string(),
            };
            let outcome = Failure::new(DELIVERY_FAILED, message);
            record.finish(Some(&address), outcome).await
        }
        Err(error) => Err(Error::Provider(error)),
    }
}

/// Why an Email settles without delivery.
struct Failure {
    reason: &'static str,
    message: String,
}

impl Failure {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

/// Where an Email's outcome is written: its status, shaped to the installed CRD.
struct Record<'a> {
    schemas: &'a InstalledSchemas,
    api: &'a Api<Email>,
    name: &'a str,
    generation: Option<i64>,
}

impl Record<'_> {
    /// Applies `status` under the sender's field manager.
    async fn apply(&self, status: Value) -> Result<(), kube::Error> {
        kubeapi::apply_status_as(self.schemas, self.api, self.name, status, FIELD_MANAGER).await
    }

    /// Records `Delivered` False for this generation: nothing is tried again until it changes.
    async fn finish(&self, address: Option<&str>, failure: Failure) -> Result<Action, Error> {
        let (name, generation) = (self.name, self.generation);
        tracing::warn!(email = name, reason = failure.reason, message = %failure.message, "not delivered");
        let mut status = json!({
            "conditions": [delivered("False", failure.reason, &failure.message, generation)],
        });
        if let Some(address) = address {
            status["emailAddress"] = json!(address);
        }
        self.apply(status).await?;
        Ok(Action::await_change())
    }
}

/// A `Delivered` condition as of now.
fn delivered(status: &str, reason: &str, message: &str, generation: Option<i64>) -> Value {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let mut condition = json!({
        "type": DELIVERED, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now.to_string(),
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = json!(generation);
    }
    condition
}
