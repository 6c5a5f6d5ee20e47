//! The scenarios, one module per capability, and the objects they are built from (as a user
//! would write them in YAML).

pub mod admission;
pub mod broadcast;
pub mod controllers;
pub mod invitation;
pub mod loops;
pub mod loops_events;
pub mod operations;
pub mod preferences;
pub mod resend;
pub mod resend_topics;

use serde_json::{Value, json};

use crate::harness::{CrdSet, Env, EnvOptions};

const NOTIFICATION: &str = "notification.miloapis.com/v1alpha1";
const IAM: &str = "iam.miloapis.com/v1alpha1";

/// A cluster with the namespaces most scenarios use: `people` (Contacts and their memberships)
/// and `groups` (ContactGroups).
pub async fn start(crds: CrdSet, options: EnvOptions) -> Env {
    let env = Env::start(crds, options).await;
    env.namespace("people").await;
    env.namespace("groups").await;
    env
}

/// A Contact without a subject.
pub fn contact(namespace: &str, name: &str, email: &str) -> Value {
    json!({"apiVersion": NOTIFICATION, "kind": "Contact",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"email": email, "givenName": name}})
}

/// A Contact whose subject is the User `user`.
pub fn user_contact(namespace: &str, name: &str, email: &str, user: &str) -> Value {
    let mut c = contact(namespace, name, email);
    c["spec"]["subject"] = json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": user});
    c
}

/// A ContactGroup (`visibility` `public` or `private`).
pub fn group(namespace: &str, name: &str, visibility: &str) -> Value {
    json!({"apiVersion": NOTIFICATION, "kind": "ContactGroup",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"displayName": name, "visibility": visibility}})
}

fn pair(contact: (&str, &str), group: (&str, &str)) -> Value {
    json!({"contactRef": {"namespace": contact.0, "name": contact.1},
        "contactGroupRef": {"namespace": group.0, "name": group.1}})
}

/// A ContactGroupMembership of `contact` (namespace, name) in `group`, in the contact's
/// namespace.
pub fn membership(name: &str, contact: (&str, &str), group: (&str, &str)) -> Value {
    json!({"apiVersion": NOTIFICATION, "kind": "ContactGroupMembership",
        "metadata": {"namespace": contact.0, "name": name},
        "spec": pair(contact, group)})
}

/// A ContactGroupMembershipRemoval (an opt-out) of `contact` from `group`.
pub fn removal(name: &str, contact: (&str, &str), group: (&str, &str)) -> Value {
    json!({"apiVersion": NOTIFICATION, "kind": "ContactGroupMembershipRemoval",
        "metadata": {"namespace": contact.0, "name": name},
        "spec": pair(contact, group)})
}

/// A User.
pub fn user(name: &str, email: &str) -> Value {
    json!({"apiVersion": IAM, "kind": "User", "metadata": {"name": name},
        "spec": {"email": email, "givenName": "Given", "familyName": name}})
}

/// The annotation `key` of `object` ("" when unset).
pub fn annotation<'v>(object: &'v Value, key: &str) -> &'v str {
    object["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

/// Removals and memberships of the contact named `contact` in the group named `group`, as the
/// API server has them.
pub async fn pair_objects(
    client: &kube::Client,
    contact: &str,
    group: &str,
) -> (Vec<Value>, Vec<Value>) {
    use crate::harness::objects::list;
    let of = |o: &Value| {
        o["spec"]["contactRef"]["name"] == contact && o["spec"]["contactGroupRef"]["name"] == group
    };
    let removals = list(client, "ContactGroupMembershipRemoval", None).await;
    let memberships = list(client, "ContactGroupMembership", None).await;
    (
        removals.into_iter().filter(of).collect(),
        memberships.into_iter().filter(of).collect(),
    )
}
