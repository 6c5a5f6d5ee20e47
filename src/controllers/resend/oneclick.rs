//! One-click unsubscribe's action: the removal of one (contact, group) pair, created by any
//! replica that takes the POST. The token already proved the link genuine; here the contact and
//! group must still be the very objects it names (same uid) and the group public, else the link
//! is unknown. Named like a provider opt-out's removal, so a repeat finds the one it made.

use futures::future::BoxFuture;

use crate::api::notification::Visibility;
use crate::api::{Contact, ContactGroup};
use crate::controllers::consent::{self, Provenance, source};
use crate::server::unsubscribe::{Target, UnsubscribeSink, Unsubscribed};

/// Annotation with the digest of the one-click token that created a removal.
pub const TOKEN_ANNOTATION: &str = "notification.miloapis.com/removal-token";

/// Creates removals for verified one-click requests.
pub struct OneClickSink {
    client: kube::Client,
}

impl OneClickSink {
    /// A sink writing through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// Opts the contact out of the group, once.
pub async fn unsubscribe(
    client: &kube::Client,
    target: &Target,
    token_id: &str,
) -> Result<Unsubscribed, kube::Error> {
    let Some(_) = consent::current::<Contact>(client, &target.contact).await? else {
        return Ok(Unsubscribed::Unknown);
    };
    let group = consent::current::<ContactGroup>(client, &target.group).await?;
    if !group.is_some_and(|g| g.spec.visibility == Visibility::Public) {
        return Ok(Unsubscribed::Unknown);
    }
    let (c, g) = (&target.contact, &target.group);
    let by = Provenance {
        source: source::ONE_CLICK,
        at: jiff::Timestamp::now(),
        evidence: Some((TOKEN_ANNOTATION, token_id)),
    };
    let (contact, group) = (consent::object_ref(c), consent::object_ref(g));
    consent::create_removal(client, &contact, &group, &by).await?;
    Ok(Unsubscribed::Done)
}

impl UnsubscribeSink for OneClickSink {
    fn unsubscribe(
        &self,
        target: Target,
        token_id: String,
    ) -> BoxFuture<'static, Result<Unsubscribed, String>> {
        let client = self.client.clone();
        Box::pin(async move {
            unsubscribe(&client, &target, &token_id)
                .await
                .map_err(|e| format!("cannot create the removal: {e}"))
        })
    }
}
