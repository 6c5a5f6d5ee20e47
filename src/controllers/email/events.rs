//! Resend's email events on any replica: the Email (found by `status.providerID` in the view) gets
//! its `Delivered` condition moved on, and hard bounces and complaints suppress the address.
//!
//! "Never regressed", precisely: each event has a strength, `email.sent` and
//! `email.delivery_delayed` 1 (Unknown `DeliveryPending`), `email.delivered` 2 (True
//! `DeliverySuccessful`), `email.bounced`, `email.failed` and `email.suppressed` 3 (False
//! `DeliveryFailed`). The condition changes only for a stronger event, or an equally strong one
//! that is newer (by the event's `created_at`). So a late `email.sent` never undoes a delivery, a
//! bounce reported after the delivery (asynchronous bounces exist) does turn it failed, and a
//! delivery reported after a bounce changes nothing.
//!
//! Suppression: a `Permanent` bounce (reason `HardBounce`) or `email.complained` (reason
//! `Complaint`) sets condition `Suppressed` True on every Contact with the address; the sender
//! then refuses to send there. A complaint also records the person's opt-out (`Unsubscribed`,
//! reason `Complaint`), and the leader's contact loop creates the removals for public groups.
//! Transient bounces change nothing. Removing a suppression set here is an operator's act: delete
//! the Contact's `Suppressed` condition (for example with a status patch) once the address is
//! good. Resend's own suppression list is followed apart ([`crate::controllers::resend::suppressions`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::{Value, json};

use super::super::kubeapi;
use super::super::resend::optout;
use crate::api::common::sync::SUPPRESSED;
use crate::api::{Contact, Email};
use crate::providers::resend::events::EmailEvent;
use crate::server::provider_events::{EventOutcome, SinkError};
use crate::view::ClusterView;
use crate::view::emails::{DELIVERED, DELIVERY_FAILED, DELIVERY_PENDING, DELIVERY_SUCCESSFUL};

/// Field manager of the events' writes on Emails and Contacts.
pub const FIELD_MANAGER: &str = "milo-webhook-email-events";
/// Suppression reason of a permanent bounce.
pub const HARD_BOUNCE: &str = "HardBounce";
/// Suppression (and opt-out) reason of a complaint.
pub const COMPLAINT: &str = "Complaint";

/// What an event says of delivery: (strength, status, reason).
fn verdict(type_: &str) -> Option<(u8, &'static str, &'static str)> {
    Some(match type_ {
        "email.sent" | "email.delivery_delayed" => (1, "Unknown", DELIVERY_PENDING),
        "email.delivered" => (2, "True", DELIVERY_SUCCESSFUL),
        "email.bounced" | "email.failed" | "email.suppressed" => (3, "False", DELIVERY_FAILED),
        _ => return None,
    })
}

/// The strength of the condition an Email holds.
fn strength(condition: &Condition) -> u8 {
    match condition.status.as_str() {
        "True" => 2,
        "False" => 3,
        _ => 1,
    }
}

/// Whether an event of `new` strength at `at` replaces `current`.
pub fn supersedes(current: Option<&Condition>, new: u8, at: jiff::Timestamp) -> bool {
    match current {
        None => true,
        Some(c) => {
            let old = strength(c);
            new > old || (new == old && at > c.last_transition_time.0)
        }
    }
}

fn text(data: &Value, pointer: &str) -> Option<String> {
    data.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The condition message: the event and the provider's reason when it gave one.
fn message(event: &EmailEvent) -> String {
    let detail = text(&event.data, "/bounce/message")
        .or_else(|| text(&event.data, "/failed/reason"))
        .or_else(|| text(&event.data, "/bounce/type"));
    match detail {
        Some(detail) => format!("{} at {}: {detail}", event.type_, event.created_at),
        None => format!("{} at {}", event.type_, event.created_at),
    }
}

/// Handles one verified email event.
pub async fn record(
    client: &kube::Client,
    view: &ClusterView,
    event: EmailEvent,
) -> Result<EventOutcome, SinkError> {
    if !view.is_synced() {
        return Err(SinkError("the cluster view is still syncing".into()));
    }
    let fail = |what: &str, e: kube::Error| SinkError(format!("cannot {what}: {e}"));
    let mut outcome = EventOutcome::Ignored;
    let suppression = match event.type_.as_str() {
        "email.bounced" if text(&event.data, "/bounce/type").as_deref() == Some("Permanent") => {
            Some(HARD_BOUNCE)
        }
        "email.complained" => Some(COMPLAINT),
        _ => None,
    };
    if let Some(reason) = suppression {
        let recipients: Vec<String> = match event.data.get("to") {
            Some(Value::Array(to)) => to
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(to)) => vec![to.clone()],
            _ => Vec::new(),
        };
        for address in recipients {
            if suppress(client, view, &address, reason, &event)
                .await
                .map_err(|e| fail("suppress the address", e))?
                > 0
            {
                outcome = EventOutcome::Applied;
            }
            if reason == COMPLAINT {
                let changed = optout::record_as(
                    client,
                    view,
                    &address,
                    optout::Reason::Complaint,
                    event.created_at,
                    &event.delivery,
                )
                .await
                .map_err(|e| fail("record the opt-out", e))?;
                if changed > 0 {
                    outcome = EventOutcome::Applied;
                }
            }
        }
    }
    if let Some(verdict) = verdict(&event.type_)
        && update_email(client, view, &event, verdict)
            .await
            .map_err(|e| fail("update the Email", e))?
    {
        outcome = EventOutcome::Applied;
    }
    Ok(outcome)
}

/// Moves the Email's `Delivered` on; false when the Email is unknown or the event is stale.
async fn update_email(
    client: &kube::Client,
    view: &ClusterView,
    event: &EmailEvent,
    (strength, status, reason): (u8, &str, &str),
) -> Result<bool, kube::Error> {
    let Some((namespace, name)) = view
        .read()
        .email_by_provider_id(&event.email_id)
        .map(|k| (k.namespace.to_owned(), k.name.to_owned()))
    else {
        return Ok(false);
    };
    let api: Api<Email> = Api::namespaced(client.clone(), &namespace);
    let Some(email) = kubeapi::get(&api, &name).await? else {
        return Ok(false);
    };
    let current = email
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == DELIVERED));
    let at = jiff::Timestamp::from_second(event.created_at.as_second()).unwrap_or(event.created_at);
    if !supersedes(current, strength, at) {
        return Ok(false);
    }
    let mut condition = json!({
        "type": DELIVERED, "status": status, "reason": reason, "message": message(event),
        "lastTransitionTime": at.to_string(),
    });
    if let Some(generation) = email.metadata.generation {
        condition["observedGeneration"] = json!(generation);
    }
    kubeapi::apply_conditions_as(&api, &name, vec![condition], FIELD_MANAGER).await?;
    Ok(true)
}

/// Sets `Suppressed` True on every Contact with `address` not already suppressed; how many.
async fn suppress(
    client: &kube::Client,
    view: &ClusterView,
    address: &str,
    reason: &str,
    event: &EmailEvent,
) -> Result<usize, kube::Error> {
    let contacts: Vec<(String, String)> = view
        .read()
        .contacts_by_email(address)
        .map(|c| (c.key.namespace.to_owned(), c.key.name.to_owned()))
        .collect();
    let at = jiff::Timestamp::from_second(event.created_at.as_second()).unwrap_or(event.created_at);
    let mut changed = 0;
    for (namespace, name) in contacts {
        let api: Api<Contact> = Api::namespaced(client.clone(), &namespace);
        let Some(contact) = kubeapi::get(&api, &name).await? else {
            continue;
        };
        let already = contact.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == SUPPRESSED && c.status == "True")
        });
        if already {
            continue;
        }
        let what = if reason == HARD_BOUNCE {
            "bounced permanently"
        } else {
            "was reported as spam"
        };
        let condition = json!({
            "type": SUPPRESSED, "status": "True", "reason": reason,
            "message": format!(
                "mail to this address {what} at {at} (Resend email {}); nothing more is sent to it until an operator removes this condition",
                event.email_id
            ),
            "lastTransitionTime": at.to_string(),
        });
        kubeapi::apply_conditions_as(&api, &name, vec![condition], FIELD_MANAGER).await?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn condition(status: &str, at: &str) -> Condition {
        Condition {
            type_: DELIVERED.into(),
            status: status.into(),
            reason: String::new(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at.parse().unwrap()),
        }
    }

    #[test]
    fn final_states_are_never_regressed() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let delivered = condition("True", "2026-11-27T12:00:00Z");
        // A late (or even later-stamped) sent never undoes a delivery.
        assert!(!supersedes(Some(&delivered), 1, t("2026-11-27T13:00:00Z")));
        // A bounce is stronger: it turns a delivery failed.
        assert!(supersedes(Some(&delivered), 3, t("2026-11-27T11:00:00Z")));
        let bounced = condition("False", "2026-11-27T12:00:00Z");
        assert!(!supersedes(Some(&bounced), 2, t("2026-11-27T13:00:00Z")));
        // Equal strength: only newer.
        assert!(!supersedes(Some(&bounced), 3, t("2026-11-27T11:00:00Z")));
        assert!(supersedes(Some(&bounced), 3, t("2026-11-27T12:30:00Z")));
        let pending = condition("Unknown", "2026-11-27T12:00:00Z");
        assert!(supersedes(Some(&pending), 2, t("2026-11-27T11:00:00Z")));
        assert!(verdict("email.opened").is_none());
    }
}
