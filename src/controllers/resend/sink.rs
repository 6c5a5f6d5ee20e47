//! What the provider events listener hands contact and email events to (email events: see
//! [`crate::controllers::email::events`]). Any replica may take an event: it
//! only records the opt-out on the Contact ([`optout::record`]); the leader's contact loop acts
//! on it. An event about an address no Contact has is answered 2xx and ignored (other systems
//! may share the Resend account).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::optout;
use crate::providers::resend::events::{
    ContactEvent, ContactEventKind, EmailEvent, SuppressionEvent,
};
use crate::server::provider_events::{EventOutcome, ProviderEventSink, SinkError};
use crate::view::ClusterView;

/// Records Resend-side opt-outs on Contacts.
pub struct OptOutSink {
    client: kube::Client,
    view: Arc<ClusterView>,
}

impl OptOutSink {
    /// A sink writing through `client`, finding Contacts by email in `view`.
    pub fn new(client: kube::Client, view: Arc<ClusterView>) -> Self {
        Self { client, view }
    }
}

impl ProviderEventSink for OptOutSink {
    fn contact_event(
        &self,
        event: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        let client = self.client.clone();
        let view = self.view.clone();
        Box::pin(async move {
            let unsubscribed = match (event.kind, event.data.unsubscribed) {
                (ContactEventKind::Created | ContactEventKind::Updated, Some(flag)) => flag,
                _ => return Ok(EventOutcome::Ignored),
            };
            if !view.is_synced() {
                // A replica still listing cannot tell an unknown address from one not yet seen:
                // the sender retries.
                return Err(SinkError("the cluster view is still syncing".into()));
            }
            match optout::record(
                &client,
                &view,
                &event.data.email,
                unsubscribed,
                event.created_at,
                &event.delivery,
            )
            .await
            {
                Ok(0) => Ok(EventOutcome::Ignored),
                Ok(_) => Ok(EventOutcome::Applied),
                Err(error) => Err(SinkError(format!("cannot record the opt-out: {error}"))),
            }
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
