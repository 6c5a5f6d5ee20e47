//! Provider sync with Loops (leader only, and only when a Loops API key is configured), on the
//! [provider layer](super::providers):
//! - [`contact`]: every Contact becomes the Loops contact whose `userId` is the Contact's uid,
//!   created with the lists of its memberships (one call), its email changed in place, deleted
//!   with it; someone who opted out is always sent `subscribed: false`, never `true`.
//! - [`group`]: Loops lists cannot be made through its API, so a ContactGroup is mirrored to the
//!   list its `spec.providers` names, checked to exist; a group naming none is left out and its
//!   condition says so once.
//! - [`membership`]: a membership sets its list true on the contact, its deletion false, never
//!   true beside a removal or a Loops opt-out of a private group.
//!
//! Loops has no listing of contacts, so drift repair re-reads the lists only: a list deleted in
//! Loops turns its groups' conditions False at the next resync.
//!
//! [`events`]: what Loops' signed webhook deliveries change (any replica, from the provider
//! events listener), decided in [`plan`].

pub mod contact;
pub mod events;
pub mod group;
pub mod membership;
pub mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::providers::{ProviderSync, SyncCore, SyncMetrics};
use crate::api::common::ProviderName;
use crate::providers::loops::{LoopsClient, LoopsError};
use crate::view::ViewKind;

/// How long a listing of lists answers look-ups: lists change only in Loops' dashboard, and
/// drift repair lists again every resync.
const LISTING_TTL: Duration = Duration::from_secs(300);

/// What the three Loops loops share.
pub struct LoopsSync {
    /// What every provider's sync shares (context, forced set, answers, metrics).
    pub core: SyncCore,
    /// The Loops client (one account, one rate limiter).
    pub client: LoopsClient,
    /// The account's list ids, and when they were listed.
    lists: tokio::sync::Mutex<Option<(Instant, HashSet<String>)>>,
}

impl ProviderSync for LoopsSync {
    fn core(&self) -> &SyncCore {
        &self.core
    }
}

impl LoopsSync {
    /// Sync state for `ctx` through `client`, beside the other `configured` providers.
    pub fn new(
        ctx: Arc<super::Context>,
        client: LoopsClient,
        metrics: SyncMetrics,
        configured: Vec<ProviderName>,
    ) -> Self {
        Self {
            core: SyncCore::new(ctx, ProviderName::Loops, configured, metrics),
            client,
            lists: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether Loops has the list `id`, from a listing younger than `LISTING_TTL` unless
    /// `fresh`.
    pub async fn list_exists(&self, id: &str, fresh: bool) -> Result<bool, LoopsError> {
        let mut lists = self.lists.lock().await;
        if !fresh
            && let Some((at, ids)) = lists.as_ref()
            && at.elapsed() < LISTING_TTL
        {
            return Ok(ids.contains(id));
        }
        let ids: HashSet<String> = self
            .client
            .list_mailing_lists()
            .await?
            .into_iter()
            .map(|l| l.id)
            .collect();
        let found = ids.contains(id);
        *lists = Some((Instant::now(), ids));
        Ok(found)
    }
}

/// Runs the three Loops loops and list drift repair until aborted (leadership lost).
pub async fn run(sync: Arc<LoopsSync>) {
    tokio::join!(
        contact::run(sync.clone()),
        group::run(sync.clone()),
        membership::run(sync.clone()),
        drift(sync.clone()),
    );
}

/// Every `--provider-resync`: lists the lists again and forces the groups whose recorded state
/// no longer matches (a list deleted, or created after its group was found missing).
async fn drift(sync: Arc<LoopsSync>) {
    let every = sync.core.ctx.settings.provider_resync;
    crate::controllers::until_synced(&sync.core.ctx.view).await;
    loop {
        tokio::time::sleep(every).await;
        let listed = match sync.client.list_mailing_lists().await {
            Ok(lists) => lists.into_iter().map(|l| l.id).collect::<HashSet<_>>(),
            Err(error) => {
                tracing::warn!(%error, "Loops drift repair cannot list the lists");
                continue;
            }
        };
        let drifted = {
            let view = sync.core.ctx.view.read();
            group::drifted(&view, &listed)
        };
        *sync.lists.lock().await = Some((Instant::now(), listed));
        if !drifted.is_empty() {
            tracing::info!(groups = drifted.len(), "Loops lists drifted");
        }
        sync.core.force(
            drifted
                .into_iter()
                .map(|k| (ViewKind::ContactGroup, k))
                .collect(),
        );
    }
}
