//! The invitation controller's Prometheus metrics, the seed's key metrics: invitations created,
//! accepted, declined and expired; invitation Emails created and failed; role assignments that
//! succeeded and failed; invitations pending now. With the registry's `milo_webhook` prefix and
//! the `_total` suffix prometheus-client gives counters, the series are
//! `milo_webhook_invitations_{created,accepted,declined,expired}_total`,
//! `milo_webhook_invitation_emails_total{result="created|failed"}`,
//! `milo_webhook_invitation_role_assignments_total{result="success|failure"}` and
//! `milo_webhook_invitations_pending`; `manifests/monitoring/prometheusrule.yaml` alerts on them.
//!
//! Only the leader reconciles, so only the leader's series move; a new leader starts from zero,
//! which `rate()`/`increase()` treat as a counter reset.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

/// Labels of an outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `created`/`failed` for Emails, `success`/`failure` for role assignments.
    pub result: String,
}

/// Invitation metrics. Cloning shares the same series.
#[derive(Clone, Debug, Default)]
pub struct InvitationMetrics {
    /// Invitations the controller took on (counted once, when it adds its finalizer).
    pub created: Counter,
    /// Invitations accepted with their roles assigned.
    pub accepted: Counter,
    /// Invitations declined.
    pub declined: Counter,
    /// Invitations that expired unanswered (or were accepted too late).
    pub expired: Counter,
    /// Invitation Emails created, and attempts that failed (missing template or organization,
    /// API errors).
    pub emails: Family<ResultLabels, Counter>,
    /// Role assignments on acceptance, by outcome; failures include roles that vanished.
    pub role_assignments: Family<ResultLabels, Counter>,
    /// Invitations waiting for an answer now.
    pub pending: Gauge,
    pending_keys: Arc<Mutex<HashSet<String>>>,
}

impl InvitationMetrics {
    /// The invitation series of `metrics`, registered there on first use. The controller is
    /// constructed anew on every leadership term; this keeps one set of series per process.
    pub fn of(metrics: &Metrics) -> Self {
        metrics.subsystem(Self::register)
    }

    /// Registers every series in `registry` and returns the handles.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "invitations_created",
            "UserInvitations taken on by the controller",
            metrics.created.clone(),
        );
        registry.register(
            "invitations_accepted",
            "UserInvitations accepted, with their roles assigned",
            metrics.accepted.clone(),
        );
        registry.register(
            "invitations_declined",
            "UserInvitations declined",
            metrics.declined.clone(),
        );
        registry.register(
            "invitations_expired",
            "UserInvitations that expired without a valid answer",
            metrics.expired.clone(),
        );
        registry.register(
            "invitation_emails",
            "Invitation Emails created (result=created) and creation attempts that failed (result=failed)",
            metrics.emails.clone(),
        );
        registry.register(
            "invitation_role_assignments",
            "Role assignments on acceptance, by result (success or failure)",
            metrics.role_assignments.clone(),
        );
        registry.register(
            "invitations_pending",
            "UserInvitations waiting for the invitee's answer",
            metrics.pending.clone(),
        );
        metrics
    }

    fn count(family: &Family<ResultLabels, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Counts one invitation Email created.
    pub fn email_created(&self) {
        Self::count(&self.emails, "created");
    }

    /// Counts one failed attempt to create an invitation Email.
    pub fn email_failed(&self) {
        Self::count(&self.emails, "failed");
    }

    /// Counts one successful role assignment.
    pub fn roles_assigned(&self) {
        Self::count(&self.role_assignments, "success");
    }

    /// Counts one failed role assignment attempt.
    pub fn role_assignment_failed(&self) {
        Self::count(&self.role_assignments, "failure");
    }

    /// Records whether the invitation `key` is pending; the gauge is the number of keys that are.
    /// Idempotent, so every reconcile can report without double counting.
    pub fn set_pending(&self, key: &str, pending: bool) {
        let mut keys = self.pending_keys.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if pending {
            keys.insert(key.to_owned())
        } else {
            keys.remove(key)
        };
        if changed {
            self.pending.set(keys.len() as i64);
        }
    }

    /// Forgets every pending invitation (when the controller stops leading, another replica
    /// takes over the count).
    pub fn clear_pending(&self) {
        self.pending_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.pending.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_counts_keys_once_and_series_have_the_documented_names() {
        let mut registry = Registry::with_prefix("milo_webhook");
        let metrics = InvitationMetrics::register(&mut registry);
        metrics.set_pending("ns/a", true);
        metrics.set_pending("ns/a", true);
        metrics.set_pending("ns/b", true);
        metrics.set_pending("ns/a", false);
        assert_eq!(metrics.pending.get(), 1);
        metrics.email_failed();
        metrics.role_assignment_failed();
        metrics.accepted.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for series in [
            "milo_webhook_invitations_created_total 0",
            "milo_webhook_invitations_accepted_total 1",
            "milo_webhook_invitations_declined_total 0",
            "milo_webhook_invitations_expired_total 0",
            "milo_webhook_invitation_emails_total{result=\"failed\"} 1",
            "milo_webhook_invitation_role_assignments_total{result=\"failure\"} 1",
            "milo_webhook_invitations_pending 1",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        metrics.clear_pending();
        assert_eq!(metrics.pending.get(), 0);
    }
}
