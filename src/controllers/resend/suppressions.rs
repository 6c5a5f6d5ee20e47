//! Resend's suppression list and the Contacts' `Suppressed` condition, kept in step both ways
//! Resend reports it: `suppression.added` / `suppression.removed` events (any replica), and the
//! list itself at every `--provider-resync` (the leader's drift repair), which catches events
//! that never arrived.
//!
//! A suppression sets `Suppressed` True on every Contact with the address (reason by origin:
//! `HardBounce`, `Complaint`, `ManualSuppression`), naming the suppression in the message. A
//! Contact already suppressed keeps the condition it has, whatever set it. Lifting a suppression
//! in Resend lifts only a condition that came from that very suppression: one a bounce or
//! complaint event set, or an operator, stays until an operator removes it.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use serde_json::json;

use crate::api::Contact;
use crate::api::common::sync::SUPPRESSED;
use crate::controllers::email::events::FIELD_MANAGER;
use crate::controllers::kubeapi;
use crate::providers::resend::types::Suppression;
use crate::view::{ClusterView, ViewKind};

/// Reason of a `Suppressed` condition a lifted suppression turns False.
pub const LIFTED: &str = "SuppressionLifted";
/// How a condition's message names the suppression it came from.
const MARK: &str = "(Resend suppression ";

/// The condition reason of a suppression of `origin`.
pub fn reason(origin: Option<&str>) -> &'static str {
    match origin {
        Some("bounce") => crate::controllers::email::events::HARD_BOUNCE,
        Some("complaint") => crate::controllers::email::events::COMPLAINT,
        _ => "ManualSuppression",
    }
}

/// The suppression a True `Suppressed` condition came from, if one did.
pub fn source(condition: &Condition) -> Option<&str> {
    if condition.type_ != SUPPRESSED || condition.status != "True" {
        return None;
    }
    let (_, rest) = condition.message.rsplit_once(MARK)?;
    rest.strip_suffix(')').filter(|id| !id.is_empty())
}

fn suppressed(contact: &Contact) -> Option<&Condition> {
    contact
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == SUPPRESSED && c.status == "True")
}

/// The Contacts with `email`, as `(namespace, name)`, but those the view (on the leader) already
/// knows to be suppressed.
fn contacts(view: &ClusterView, email: &str) -> Vec<(String, String)> {
    let store = view.read();
    store
        .contacts_by_email(email)
        .filter(|c| {
            !store
                .contact_sync(c.key.namespace, c.key.name)
                .is_some_and(|s| s.suppressed)
        })
        .map(|c| (c.key.namespace.to_owned(), c.key.name.to_owned()))
        .collect()
}

/// Sets `Suppressed` True for `suppression` on every Contact with its address not already
/// suppressed; how many changed.
pub async fn added(
    client: &kube::Client,
    view: &ClusterView,
    suppression: &Suppression,
    at: jiff::Timestamp,
) -> Result<usize, kube::Error> {
    let at = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    let origin = suppression.origin.as_deref().unwrap_or("manual");
    let mut changed = 0;
    for (namespace, name) in contacts(view, &suppression.email) {
        let api: Api<Contact> = Api::namespaced(client.clone(), &namespace);
        let Some(contact) = kubeapi::get(&api, &name).await? else {
            continue;
        };
        if suppressed(&contact).is_some() {
            continue;
        }
        let condition = json!({
            "type": SUPPRESSED, "status": "True", "reason": reason(suppression.origin.as_deref()),
            "message": format!(
                "Resend suppressed this address ({origin}) at {at}; nothing is sent to it while it stands {MARK}{})",
                suppression.id
            ),
            "lastTransitionTime": at.to_string(),
        });
        kubeapi::apply_conditions_as(&api, &name, vec![condition], FIELD_MANAGER).await?;
        changed += 1;
    }
    Ok(changed)
}

/// Lifts `Suppressed` on every Contact with the address whose condition came from
/// `suppression`; how many changed.
pub async fn removed(
    client: &kube::Client,
    view: &ClusterView,
    suppression: &Suppression,
    at: jiff::Timestamp,
) -> Result<usize, kube::Error> {
    // Every Contact of the address: these are the suppressed ones.
    let everyone: Vec<(String, String)> = view
        .read()
        .contacts_by_email(&suppression.email)
        .map(|c| (c.key.namespace.to_owned(), c.key.name.to_owned()))
        .collect();
    let mut changed = 0;
    for (namespace, name) in everyone {
        changed +=
            usize::from(lift(client, &namespace, &name, |id| id == suppression.id, at).await?);
    }
    Ok(changed)
}

/// Lifts the Contact's `Suppressed` condition when it came from a suppression `gone` says is
/// gone; whether it did.
async fn lift(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    gone: impl Fn(&str) -> bool,
    at: jiff::Timestamp,
) -> Result<bool, kube::Error> {
    let api: Api<Contact> = Api::namespaced(client.clone(), namespace);
    let Some(contact) = kubeapi::get(&api, name).await? else {
        return Ok(false);
    };
    let Some(id) = suppressed(&contact).and_then(source).filter(|id| gone(id)) else {
        return Ok(false);
    };
    let at = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
    let condition = json!({
        "type": SUPPRESSED, "status": "False", "reason": LIFTED,
        "message": format!("Resend lifted the suppression at {at} {MARK}{id})"),
        "lastTransitionTime": at.to_string(),
    });
    kubeapi::apply_conditions_as(&api, name, vec![condition], FIELD_MANAGER).await?;
    Ok(true)
}

/// What one pass over Resend's suppression list changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resynced {
    /// Contacts newly suppressed.
    pub suppressed: usize,
    /// Contacts whose suppression was lifted at Resend.
    pub lifted: usize,
}

/// Brings the Contacts in step with `listed`, Resend's whole suppression list (leader only: it
/// reads the view's suppressed marks).
pub async fn resync(
    client: &kube::Client,
    view: &ClusterView,
    listed: &[Suppression],
) -> Result<Resynced, kube::Error> {
    let now = jiff::Timestamp::now();
    let mut done = Resynced::default();
    for suppression in listed {
        done.suppressed += added(client, view, suppression, now).await?;
    }
    let ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    let marked: Vec<(String, String)> = {
        let store = view.read();
        store
            .names(ViewKind::Contact)
            .into_iter()
            .filter(|(ns, name)| store.contact_sync(ns, name).is_some_and(|c| c.suppressed))
            .collect()
    };
    for (namespace, name) in marked {
        done.lifted +=
            usize::from(lift(client, &namespace, &name, |id| !ids.contains(id), now).await?);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn condition(status: &str, message: &str) -> Condition {
        Condition {
            type_: SUPPRESSED.into(),
            status: status.into(),
            reason: String::new(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Time("2026-11-27T12:00:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn only_a_condition_a_suppression_set_names_it() {
        let from = condition(
            "True",
            "Resend suppressed this address (manual) at t; nothing is sent to it while it stands (Resend suppression sup_1)",
        );
        assert_eq!(source(&from), Some("sup_1"));
        let bounce = condition(
            "True",
            "mail to this address bounced permanently at t (Resend email e-1)",
        );
        assert_eq!(source(&bounce), None);
        let lifted = condition(
            "False",
            "Resend lifted the suppression at t (Resend suppression sup_1)",
        );
        assert_eq!(source(&lifted), None);
        assert_eq!(reason(Some("bounce")), "HardBounce");
        assert_eq!(reason(Some("complaint")), "Complaint");
        assert_eq!(reason(None), "ManualSuppression");
    }
}
