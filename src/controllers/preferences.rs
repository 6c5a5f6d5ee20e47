//! The preference page's changes ([`crate::server::preferences`]), made by any replica that
//! takes the POST. The page was read from the view; here the Contact and group are checked
//! against the API server (same uid, the group public), then:
//!
//! - **leave** makes the pair's removal on the person's behalf ([`consent::create_removal`],
//!   source `preference-page`, time, the token's digest), which the removal controller turns
//!   into the membership's deletion and the providers into their own opt-outs;
//! - **join** undoes what the person did themselves ([`consent::rejoin`]): the removals they made
//!   on this page, through a one-click link or at a provider go, and the membership is made
//!   again, annotated with the same provenance. A removal an operator made, or a complaint, stays.
//!
//! Before answering, each waits (bounded) for this replica's view to show the change, so the
//! page the person is sent back to shows it too.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::consent::{self, Made, Provenance, RejoinError, Rejoined, source};
use crate::api::common::ObjectRef;
use crate::api::notification::Visibility;
use crate::api::{Contact, ContactGroup};
use crate::server::preferences::{Changed, Choice, PreferenceSink};
use crate::server::unsubscribe::Named;
use crate::view::ClusterView;

/// Annotation with the digest of the page token a removal was made with.
pub const TOKEN_ANNOTATION: &str = super::resend::oneclick::TOKEN_ANNOTATION;
/// Annotation with the digest of the page token a membership was made again with.
pub const JOIN_TOKEN_ANNOTATION: &str = "notification.miloapis.com/membership-token";

/// How long a change waits for this replica's view to show it.
const VIEW_WAIT: Duration = Duration::from_secs(3);

/// Makes the changes people choose on their preference page (cheap to clone: a client and the
/// view's handle).
#[derive(Clone)]
pub struct PreferenceActions {
    client: kube::Client,
    view: Arc<ClusterView>,
}

impl PreferenceActions {
    /// Changes written through `client`, awaited in `view`.
    pub fn new(client: kube::Client, view: Arc<ClusterView>) -> Self {
        Self { client, view }
    }

    async fn apply(
        &self,
        contact: &Named,
        group: &ObjectRef,
        choice: Choice,
        token_id: &str,
    ) -> Result<Changed, RejoinError> {
        if consent::current::<Contact>(&self.client, contact)
            .await?
            .is_none()
        {
            return Ok(Changed::Unknown);
        }
        let groups: kube::Api<ContactGroup> =
            kube::Api::namespaced(self.client.clone(), &group.namespace);
        let public = super::kubeapi::get(&groups, &group.name)
            .await?
            .is_some_and(|g| g.spec.visibility == Visibility::Public);
        if !public {
            return Ok(Changed::Unknown);
        }
        let contact = consent::object_ref(contact);
        let at = jiff::Timestamp::now();
        match choice {
            Choice::Leave => {
                let by = Provenance {
                    source: source::PREFERENCE_PAGE,
                    at,
                    evidence: Some((TOKEN_ANNOTATION, token_id)),
                };
                let made = consent::create_removal(&self.client, &contact, group, &by).await?;
                if made == Made::New {
                    self.wait(|| !self.view.read().removals_of(&contact, group).is_empty())
                        .await;
                }
                Ok(Changed::Done)
            }
            Choice::Join => {
                let by = Provenance {
                    source: source::PREFERENCE_PAGE,
                    at,
                    evidence: Some((JOIN_TOKEN_ANNOTATION, token_id)),
                };
                match consent::rejoin(&self.client, &self.view, &contact, group, &by).await? {
                    Rejoined::Rejoined | Rejoined::NotOptedOut => {
                        self.wait(|| !self.view.read().memberships_of(&contact, group).is_empty())
                            .await;
                        Ok(Changed::Done)
                    }
                    Rejoined::Kept => Ok(Changed::Kept),
                }
            }
        }
    }

    /// Waits until `shown` holds or [`VIEW_WAIT`] passes.
    async fn wait(&self, shown: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + VIEW_WAIT;
        while !shown() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl PreferenceSink for PreferenceActions {
    fn change(
        &self,
        contact: Named,
        group: ObjectRef,
        choice: Choice,
        token_id: String,
    ) -> BoxFuture<'static, Result<Changed, String>> {
        let actions = self.clone();
        Box::pin(async move {
            match actions.apply(&contact, &group, choice, &token_id).await {
                Ok(changed) => Ok(changed),
                Err(RejoinError::NotYet(why)) => {
                    tracing::debug!(%why, "preference change must wait");
                    Ok(Changed::NotYet)
                }
                Err(RejoinError::Api(error)) => Err(format!("cannot make the change: {error}")),
            }
        })
    }
}
