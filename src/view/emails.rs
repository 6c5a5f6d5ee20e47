//! Emails in the view: what the sender needs to decide in memory whether an Email needs work, and
//! the index the delivery events of any replica find an Email by (`status.providerID`).
//!
//! Every replica keeps the provider id (events reach any replica); the delivery flags and the
//! priority only the leader keeps, like the other controllers' fields. An Email's record is a
//! symbol and four bytes: rendered bodies, variables and recipients are read from the API server
//! by the one reconcile that sends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::store::{NamedRef, Row, Store, ViewKind};
use super::symbols::Sym;
use crate::api::Email;
use crate::api::notification::EmailPriority;

/// The condition type of an Email's delivery.
pub const DELIVERED: &str = "Delivered";
/// Accepted by the provider, not yet delivered.
pub const DELIVERY_PENDING: &str = "DeliveryPending";
/// Delivered to the recipient's server.
pub const DELIVERY_SUCCESSFUL: &str = "DeliverySuccessful";
/// Refused, bounced or failed for good.
pub const DELIVERY_FAILED: &str = "DeliveryFailed";
/// Not sent: the address is suppressed (hard bounce or complaint).
pub const SUPPRESSED: &str = "Suppressed";

/// What the view keeps of an Email.
#[derive(Clone, Copy, Debug)]
pub struct EmailRecord {
    /// `status.providerID`, when set.
    pub provider_id: Option<Sym>,
    /// `spec.priority` (leader only; `Normal` elsewhere).
    pub priority: EmailPriority,
    /// Handed to the provider, or decided not to be, for the current generation (leader only).
    pub sent: bool,
    /// Its delivery state is final (leader only).
    pub done: bool,
    /// Being deleted (leader only).
    pub deleting: bool,
}

/// An Email as the sender reads it.
#[derive(Clone, Copy, Debug)]
pub struct EmailState<'a> {
    /// Where it lives.
    pub key: NamedRef<'a>,
    /// `status.providerID`.
    pub provider_id: Option<&'a str>,
    /// `spec.priority`.
    pub priority: EmailPriority,
    /// Sent (or settled without sending) for its current generation: nothing to do.
    pub sent: bool,
    /// Delivered True, or False for good.
    pub done: bool,
    /// Being deleted.
    pub deleting: bool,
}

/// Whether `conditions` hold a `Delivered` condition that settles the send for `generation`:
/// pending, successful, failed or suppressed, written for this generation. A transient failure
/// writes no condition, so it never looks settled.
pub fn delivery_settled(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions.iter().any(|c| {
        c.type_ == DELIVERED
            && c.observed_generation == generation
            && matches!(
                c.reason.as_str(),
                DELIVERY_PENDING | DELIVERY_SUCCESSFUL | DELIVERY_FAILED | SUPPRESSED
            )
    })
}

/// Whether the `Delivered` condition is final: True, or False (failed, bounced, suppressed).
pub fn delivery_final(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == DELIVERED && (c.status == "True" || c.status == "False"))
}

impl Store {
    /// Stores or replaces an Email.
    pub fn apply_email(&mut self, email: &Email) {
        let key_ns = email.namespace().unwrap_or_default();
        let key = self.key(&key_ns, &email.name_any());
        let status = email.status.as_ref();
        let provider_id = self.intern_present(status.and_then(|s| s.provider_id.as_deref()));
        let leader = self.extras.is_some();
        let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let generation = email.metadata.generation;
        let record = EmailRecord {
            provider_id,
            priority: if leader {
                email.spec.priority
            } else {
                EmailPriority::Normal
            },
            sent: leader && (provider_id.is_some() || delivery_settled(conditions, generation)),
            done: leader && delivery_final(conditions),
            deleting: leader && email.metadata.deletion_timestamp.is_some(),
        };
        self.upsert(ViewKind::Email, key, Row::Email(record));
    }

    /// The Email `namespace/name` as the sender reads it.
    pub fn email_state(&self, namespace: &str, name: &str) -> Option<EmailState<'_>> {
        let (key, row) = self.row(ViewKind::Email, namespace, name)?;
        let Row::Email(record) = row else {
            return None;
        };
        Some(EmailState {
            key: self.named(key),
            provider_id: record.provider_id.map(|s| self.symbols.resolve(s)),
            priority: record.priority,
            sent: record.sent,
            done: record.done,
            deleting: record.deleting,
        })
    }

    /// The Email whose `status.providerID` is `id` (the first, should two claim it).
    pub fn email_by_provider_id(&self, id: &str) -> Option<NamedRef<'_>> {
        let sym = self.symbols.get(id)?;
        let key = *self.indexes.emails_by_provider_id.get(&sym).first()?;
        Some(self.named(key))
    }
}
