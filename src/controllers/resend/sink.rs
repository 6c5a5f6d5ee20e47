//! What the provider events listener hands contact and email events to (email events: see
//! [`crate::controllers::email::events`]). Any replica may take an event: it
//! only records the opt-out on the Contact ([`optout::record`]); the leader's contact loop acts
//! on it. An event about an address no Contact has is answered 2xx and ignored (other systems
//! may share the Resend account). With a Resend client ([`OptOutSink::with_topics`]), each
//! `contact.updated` also reads the contact's topics: a topic left on Resend's preference page
//! becomes the pair's removal ([`super::topic_optout::from_event`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{optout, topic_optout};
use crate::providers::resend::ResendClient;
use crate::providers::resend::events::{
    ContactEvent, ContactEventKind, EmailEvent, SuppressionEvent,
};
use crate::server::provider_events::{EventOutcome, ProviderEventSink, SinkError};
use crate::view::ClusterView;

/// Records Resend-side opt-outs on Contacts.
pub struct OptOutSink {
    client: kube::Client,
    view: Arc<ClusterView>,
    /// Reads contacts' topics; without it topic choices arrive at the next resync only.
    resend: Option<ResendClient>,
}

impl OptOutSink {
    /// A sink writing through `client`, finding Contacts by email in `view`.
    pub fn new(client: kube::Client, view: Arc<ClusterView>) -> Self {
        Self {
            client,
            view,
            resend: None,
        }
    }

    /// This sink reading contacts' topics through `resend` on each `contact.updated` (the
    /// account's client, sharing its rate limit with the sync).
    pub fn with_topics(mut self, resend: Option<ResendClient>) -> Self {
        self.resend = resend;
        self
    }
}

impl ProviderEventSink for OptOutSink {
    fn contact_event(
        &self,
        event: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        let client = self.client.clone();
        let view = self.view.clone();
        let resend = self.resend.clone();
        Box::pin(async move {
            let unsubscribed = match (event.kind, event.data.unsubscribed) {
                (ContactEventKind::Created | ContactEventKind::Updated, flag) => flag,
                _ => return Ok(EventOutcome::Ignored),
            };
            let topics = resend.filter(|_| event.kind == ContactEventKind::Updated);
            if unsubscribed.is_none() && topics.is_none() {
                return Ok(EventOutcome::Ignored);
            }
            if !view.is_synced() {
                // A replica still listing cannot tell an unknown address from one not yet seen:
                // the sender retries.
                return Err(SinkError("the cluster view is still syncing".into()));
            }
            let mut changed = 0;
            if let Some(unsubscribed) = unsubscribed {
                let (email, at) = (&event.data.email, event.created_at);
                changed += optout::record(&client, &view, email, unsubscribed, at, &event.delivery)
                    .await
                    .map_err(|e| SinkError(format!("cannot record the opt-out: {e}")))?;
            }
            if let Some(resend) = topics {
                changed += topic_optout::from_event(&client, &resend, &view, &event)
                    .await
                    .map_err(|e| SinkError(format!("cannot read the contact's topics: {e}")))?;
            }
            Ok(match changed {
                0 => EventOutcome::Ignored,
                _ => EventOutcome::Applied,
            })
        })
    }

    fn email_event(
        &self,
        event: EmailEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        let client = self.client.clone();
        let view = self.view.clone();
        Box::pin(
            async move { crate::controllers::email::events::record(&client, &view, event).await },
        )
    }

    fn suppression_event(
        &self,
        event: SuppressionEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        let client = self.client.clone();
        let view = self.view.clone();
        Box::pin(async move {
            if !view.is_synced() {
                return Err(SinkError("the cluster view is still syncing".into()));
            }
            let at = event.created_at;
            let result = match event.added {
                true => super::suppressions::added(&client, &view, &event.suppression, at).await,
                false => super::suppressions::removed(&client, &view, &event.suppression, at).await,
            };
            match result {
                Ok(0) => Ok(EventOutcome::Ignored),
                Ok(_) => Ok(EventOutcome::Applied),
                Err(error) => Err(SinkError(format!("cannot record the suppression: {error}"))),
            }
        })
    }
}
