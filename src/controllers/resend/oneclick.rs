//! One-click unsubscribe's action: the removal of one (contact, group) pair, created by any
//! replica that takes the POST. The token already proved the link genuine; here the contact and
//! group must still be the very objects it names (same uid) and the group public, else the link
//! is unknown. Named like a provider opt-out's removal, so a repeat finds the one it made.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use kube::Api;

use super::optout::{SOURCE_ANNOTATION, TIME_ANNOTATION};
use crate::api::common::ObjectRef;
use crate::api::notification::{ContactGroupMembershipRemovalSpec, Visibility};
use crate::api::{Contact, ContactGroup, ContactGroupMembershipRemoval};
use crate::controllers::{kubeapi, names};
use crate::server::unsubscribe::{Named, Target, UnsubscribeSink, Unsubscribed};

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

async fn same<K>(client: &kube::Client, named: &Named) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &named.namespace);
    Ok(kubeapi::get(&api, &named.name)
        .await?
        .filter(|o| o.meta().uid.as_deref() == Some(named.uid.as_str())))
}

/// Opts the contact out of the group, once.
pub async fn unsubscribe(
    client: &kube::Client,
    target: &Target,
    token_id: &str,
) -> Result<Unsubscribed, kube::Error> {
    let Some(_) = same::<Contact>(client, &target.contact).await? else {
        return Ok(Unsubscribed::Unknown);
    };
    let group = same::<ContactGroup>(client, &target.group).await?;
    if !group.is_some_and(|g| g.spec.visibility == Visibility::Public) {
        return Ok(Unsubscribed::Unknown);
    }
    let (c, g) = (&target.contact, &target.group);
    let name = names::unsubscribe_removal((&c.namespace, &c.name), (&g.namespace, &g.name));
    let spec = ContactGroupMembershipRemovalSpec {
        contact_ref: ObjectRef {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
        },
        contact_group_ref: ObjectRef {
            namespace: g.namespace.clone(),
            name: g.name.clone(),
        },
    };
    let mut removal = ContactGroupMembershipRemoval::new(&name, spec);
    removal.metadata.namespace = Some(c.namespace.clone());
    removal.metadata.annotations = Some(BTreeMap::from([
        (
            SOURCE_ANNOTATION.to_owned(),
            "one-click-unsubscribe".to_owned(),
        ),
        (
            TIME_ANNOTATION.to_owned(),
            jiff::Timestamp::now().to_string(),
        ),
        (TOKEN_ANNOTATION.to_owned(), token_id.to_owned()),
    ]));
    let api: Api<ContactGroupMembershipRemoval> = Api::namespaced(client.clone(), &c.namespace);
    match kubeapi::create(&api, &removal).await {
        Ok(_) => Ok(Unsubscribed::Done),
        // Another removal of the pair already opts the person out.
        Err(error) if kubeapi::denial_causes(&error).contains(&"FieldValueDuplicate") => {
            Ok(Unsubscribed::Done)
        }
        Err(error) => Err(error),
    }
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
