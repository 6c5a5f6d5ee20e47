//! EmailBroadcasts in the view, and the members a broadcast goes to.
//!
//! A broadcast's record is sixteen bytes, kept only on the leader (admission reads broadcasts from
//! the request): when it is due, whether it is done for its generation and whether it is being
//! deleted. Everything else (template, progress, the batch in flight) the sender reads from the
//! broadcast itself in the one reconcile that sends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::records::NEVER;
use super::store::{Row, Store, ViewKind};
use crate::api::EmailBroadcast;
use crate::api::common::ObjectRef;

/// The condition type of a broadcast's progress (Milo's).
pub const READY: &str = "Ready";
/// `Ready` Unknown: waiting for its time, or sending (the message says how far).
pub const CREATE_PENDING: &str = "CreatePending";
/// `Ready` True: every batch is done.
pub const CREATE_SUCCESSFUL: &str = "CreateSuccessful";
/// `Ready` False: the group is public and no one-click unsubscribe is configured, so nothing is
/// sent (consent first). Not final: configuring it and restarting sends.
pub const UNSUBSCRIBE_NOT_CONFIGURED: &str = "UnsubscribeNotConfigured";
/// `Ready` False: the installed EmailBroadcast CRD does not declare the status fields that keep
/// sending exactly once across restarts, so nothing is sent. Not final: applying our CRDs sends.
pub const CRD_FIELDS_MISSING: &str = "CRDFieldsMissing";
/// `Ready` False, final: the template cannot be rendered.
pub const TEMPLATE_INVALID: &str = "TemplateInvalid";
/// `Ready` False, final: the provider refused every batch.
pub const SEND_FAILED: &str = "SendFailed";

/// What the view keeps of a broadcast (leader only).
#[derive(Clone, Copy, Debug)]
pub struct BroadcastRecord {
    /// `spec.scheduledAt` in Unix seconds; [`NEVER`] when unset (send at once).
    scheduled_at: i64,
    /// Settled for the current generation.
    done: bool,
    /// Being deleted.
    deleting: bool,
}

/// A broadcast as the sender decides on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastState {
    /// When to send, Unix seconds; `None` for at once.
    pub scheduled_at: Option<i64>,
    /// `Ready` True `CreateSuccessful`, or False for good, for the current generation.
    pub done: bool,
    /// Being deleted: no further batch goes out.
    pub deleting: bool,
}

impl BroadcastState {
    /// Whether the sender has work on it.
    pub fn needs_send(&self) -> bool {
        !self.done && !self.deleting
    }
}

/// Whether `conditions` settle the broadcast for `generation`: `Ready` True `CreateSuccessful`,
/// or False with a final reason, written for this generation.
pub fn broadcast_settled(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions.iter().any(|c| {
        c.type_ == READY
            && c.observed_generation == generation
            && match c.status.as_str() {
                "True" => c.reason == CREATE_SUCCESSFUL,
                "False" => matches!(c.reason.as_str(), TEMPLATE_INVALID | SEND_FAILED),
                _ => false,
            }
    })
}

/// Why a member of a group gets no broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A removal (opt-out) of the pair exists.
    OptedOut,
    /// The Contact's address is suppressed (hard bounce or complaint).
    Suppressed,
    /// The Contact's `Unsubscribed` condition is True.
    Unsubscribed,
}

/// A member of a group, in the sending order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The Contact.
    pub contact: ObjectRef,
    /// Why it is passed over, if it is.
    pub skip: Option<Skip>,
}

impl Member {
    /// `namespace/name` of the Contact: the key the sending order and the cursor use.
    pub fn key(&self) -> String {
        contact_key(&self.contact)
    }
}

/// `namespace/name` of a Contact.
pub fn contact_key(contact: &ObjectRef) -> String {
    format!("{}/{}", contact.namespace, contact.name)
}

impl Store {
    /// Stores or replaces an EmailBroadcast (only the leader keeps them).
    pub fn apply_broadcast(&mut self, broadcast: &EmailBroadcast) {
        if self.extras.is_none() {
            return;
        }
        let key = self.key(
            &broadcast.namespace().unwrap_or_default(),
            &broadcast.name_any(),
        );
        let conditions = broadcast
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let record = BroadcastRecord {
            scheduled_at: broadcast
                .spec
                .scheduled_at
                .as_ref()
                .map_or(NEVER, |t| t.0.as_second()),
            done: broadcast_settled(conditions, broadcast.metadata.generation),
            deleting: broadcast.metadata.deletion_timestamp.is_some(),
        };
        self.upsert(ViewKind::EmailBroadcast, key, Row::EmailBroadcast(record));
    }

    /// The broadcast `namespace/name` as the sender decides on it (leader only).
    pub fn broadcast_state(&self, namespace: &str, name: &str) -> Option<BroadcastState> {
        let (_, Row::EmailBroadcast(record)) =
            self.row(ViewKind::EmailBroadcast, namespace, name)?
        else {
            return None;
        };
        Some(BroadcastState {
            scheduled_at: (record.scheduled_at != NEVER).then_some(record.scheduled_at),
            done: record.done,
            deleting: record.deleting,
        })
    }

    /// The members of the group `namespace/name` (memberships naming it and not being deleted),
    /// each Contact once, ordered by Contact namespace and name, with why each passed over is
    /// (a removal of the pair, a suppressed or unsubscribed Contact). A scan of the memberships:
    /// once per broadcast batch, not per recipient.
    pub fn broadcast_members(&self, namespace: &str, name: &str) -> Vec<Member> {
        let Some(group) = self.lookup_key(namespace, name) else {
            return Vec::new();
        };
        let contacts: Vec<_> = self.tables[ViewKind::Membership as usize]
            .values()
            .filter_map(|row| match row {
                Row::Membership(pair, status) if pair.group == group && !status.deleting => {
                    Some(*pair)
                }
                _ => None,
            })
            .collect();
        let mut members: Vec<Member> = contacts
            .into_iter()
            .map(|pair| {
                let opted_out = !self.indexes.removals_by_pair.get(&pair).is_empty();
                let (contact, _) = self.pair_refs(pair);
                let fields = self.extras().and_then(|e| {
                    let suppressed = e.contact_sync_fields(pair.contact)?.3;
                    Some((suppressed, e.contact_unsubscribed(pair.contact)))
                });
                let skip = match fields {
                    _ if opted_out => Some(Skip::OptedOut),
                    Some((true, _)) => Some(Skip::Suppressed),
                    Some((_, true)) => Some(Skip::Unsubscribed),
                    _ => None,
                };
                Member { contact, skip }
            })
            .collect();
        members.sort_by(|a, b| {
            (&a.contact.namespace, &a.contact.name).cmp(&(&b.contact.namespace, &b.contact.name))
        });
        members.dedup_by(|a, b| a.contact == b.contact);
        members
    }
}
