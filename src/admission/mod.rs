//! Admission decisions: pure functions from a request and the view to a verdict, one module per
//! resource. Nothing here performs I/O; the transport ([`crate::server`]) and the offline commands
//! both call [`decide`].

pub mod broadcast;
pub mod chain;
pub mod checks;
pub mod contact;
pub mod decode;
pub mod diagnose;
pub mod email;
pub mod emailtemplate;
pub mod group;
pub mod invitation;
pub mod membership;
pub mod pair;
pub mod policy;
pub mod registry;
pub mod removal;
pub mod requester;
pub mod review;
pub mod shape;
pub mod status;
pub mod unique_keys;

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
}

impl From<Denial> for Verdict {
    fn from(denial: Denial) -> Self {
        Verdict::Deny(denial)
    }
}

/// Operator settings rules depend on.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// How long a new invitation stays valid when it names no expirationDate; `None` keeps
    /// "never expires".
    pub invitation_ttl: Option<std::time::Duration>,
    /// A fixed "now", for offline checks of what would happen at a given time; `None` reads the
    /// clock.
    pub clock: Option<jiff::Timestamp>,
}

impl Settings {
    /// The default invitation lifetime: 14 days.
    pub const DEFAULT_INVITATION_TTL: std::time::Duration =
        std::time::Duration::from_secs(14 * 24 * 3600);
}

/// What a rule may read besides the request: the view, the settings and the time of the decision.
pub struct Context<'a> {
    /// The cluster, as indexed.
    pub store: &'a Store,
    /// Operator settings.
    pub settings: &'a Settings,
    /// The time the decision is made at.
    pub now: jiff::Timestamp,
}

/// A rule's signature: the request, read against a locked store.
pub type Decide = fn(&Request, &Context<'_>) -> Verdict;

/// Runs one webhook: checks the request is one it serves and that the view can answer, then asks
/// the rule. Misrouted requests are denied (400), never silently allowed.
pub fn decide(
    webhook: &Webhook,
    request: &Request,
    view: &ClusterView,
    settings: &Settings,
) -> Verdict {
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
    let store = view.read();
    let now = settings.clock.unwrap_or_else(jiff::Timestamp::now);
    (webhook.decide)(
        request,
        &Context {
            store: &store,
            settings,
            now,
        },
    )
}
