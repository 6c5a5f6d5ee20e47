//! Admission decisions: pure functions from a request and the view to a verdict, one module per
//! resource. Nothing here performs I/O; the transport ([`crate::server`]) and the offline commands
//! both call [`decide`].

pub mod chain;
pub mod membership;
pub mod pair;
pub mod registry;
pub mod removal;
pub mod review;
pub mod status;

pub use registry::{WEBHOOKS, Webhook, WebhookType};
pub use review::{AdmissionResponse, BadReview, Request, ReviewResponse};
pub use status::{Denial, FieldError, FieldErrorType, Target};

use crate::view::{ClusterView, Store};

/// The outcome of one webhook for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Admit, optionally changing the object and telling the client something.
    Allow {
        /// JSON Patch to apply (empty for validating webhooks).
        patch: json_patch::Patch,
        /// Warnings kubectl prints.
        warnings: Vec<String>,
    },
    /// Reject with a Kubernetes `Status`.
    Deny(Denial),
}

impl Verdict {
    /// Admit unchanged.
    pub fn allow() -> Self {
        Verdict::Allow {
            patch: json_patch::Patch(Vec::new()),
            warnings: Vec::new(),
        }
    }

    /// Whether the verdict admits the request.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

impl From<Denial> for Verdict {
    fn from(denial: Denial) -> Self {
        Verdict::Deny(denial)
    }
}

/// A rule's signature: the request, read against a locked store.
pub type Decide = fn(&Request, &Store) -> Verdict;

/// Runs one webhook: checks the request is one it serves and that the view can answer, then asks
/// the rule. Misrouted requests are denied (400), never silently allowed.
pub fn decide(webhook: &Webhook, request: &Request, view: &ClusterView) -> Verdict {
    if let Err(denial) = webhook.check_serves(request) {
        return denial.into();
    }
    if !view.is_synced() {
        let waiting: Vec<&str> = view
            .unsynced_kinds()
            .into_iter()
            .map(|k| k.kind_name())
            .collect();
        return Denial::unavailable(format!(
            "milo-webhook has not finished loading the cluster state ({} pending); retry shortly",
            waiting.join(", ")
        ))
        .into();
    }
    (webhook.decide)(request, &view.read())
}
