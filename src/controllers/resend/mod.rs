//! Provider sync with Resend (leader only, and only when an API key is configured): Contacts
//! become Resend contacts, ContactGroups segments (and public ones [`topics`]), memberships
//! segment memberships; opt-outs reported by Resend, and topics left on its preference page
//! ([`topic_optout`]), come back as removals.
//!
//! Three loops share one Resend client (so one account rate limit) and the view: [`contact`],
//! [`group`] and [`membership`], each a loop of the [provider layer](super::providers), which
//! also writes their status. [`drift`] compares with Resend every
//! `--provider-resync` and forces the objects that drifted; [`optout`] turns a person's
//! Resend-side opt-out into removals.
//!
//! A first sync costs about one call per contact: the contacts Resend has are listed once into
//! the shared [`directory`] (pages of 100, refreshed by drift repair) instead of looked up one by
//! one, and each new contact is created with the segments of its memberships, which then only
//! record their status.

pub mod contact;
pub mod directory;
pub mod drift;
pub mod group;
pub mod membership;
pub mod oneclick;
pub mod optout;
pub mod sink;
pub mod suppressions;
pub mod topic_optout;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use super::providers::{ProviderSync, SyncCore};
use crate::api::common::ProviderName;
use crate::providers::resend::ResendClient;

pub use super::providers::SyncMetrics;

/// Field manager of the sync's writes (status conditions, provider ids, its finalizer), apart
/// from the other controllers' so server-side apply never drops what they wrote.
pub const FIELD_MANAGER: &str = "milo-webhook-resend";

/// How long a membership waits before trying again when Resend does not know its contact or
/// segment yet (another loop is about to create it).
const PREREQUISITE_WAIT: Duration = Duration::from_secs(5);

/// When segments were listed, and their ids by name.
type SegmentListing = (
    std::time::Instant,
    std::collections::HashMap<String, String>,
);

/// What the three loops share.
pub struct ResendSync {
    /// What every provider's sync shares (context, forced set, answers, metrics).
    pub core: SyncCore,
    /// The Resend client (one account, one rate limiter).
    pub client: ResendClient,
    /// Segment ids by name, as last listed: what a group looks up before creating a segment.
    segments: tokio::sync::Mutex<Option<SegmentListing>>,
    /// The contacts Resend holds by email, as last listed: what a contact without a recorded id
    /// is looked up in (shared, so a first sync lists once rather than a GET per contact).
    pub directory: directory::Directory,
    /// The public groups' topic ids, as last listed.
    pub topics: topics::Topics,
}

impl ProviderSync for ResendSync {
    fn core(&self) -> &SyncCore {
        &self.core
    }
}

impl ResendSync {
    /// Sync state for `ctx` through `client`, Resend the only provider.
    pub fn new(ctx: Arc<super::Context>, client: ResendClient, metrics: SyncMetrics) -> Self {
        Self::among(ctx, client, metrics, vec![ProviderName::Resend])
    }

    /// Sync state for `ctx` through `client`, beside the other `configured` providers.
    pub fn among(
        ctx: Arc<super::Context>,
        client: ResendClient,
        metrics: SyncMetrics,
        configured: Vec<ProviderName>,
    ) -> Self {
        let resync = ctx.settings.provider_resync;
        Self {
            core: SyncCore::new(ctx, ProviderName::Resend, configured, metrics),
            client,
            segments: tokio::sync::Mutex::new(None),
            directory: directory::Directory::default(),
            topics: topics::Topics::new(resync * directory::MAX_AGE_RESYNCS),
        }
    }
}

/// Runs the three sync loops and drift repair until aborted (leadership lost).
pub async fn run(sync: Arc<ResendSync>) {
    tokio::join!(
        contact::run(sync.clone()),
        group::run(sync.clone()),
        membership::run(sync.clone()),
        drift::run(sync.clone()),
    );
}

#[cfg(test)]
mod plan_tests;
