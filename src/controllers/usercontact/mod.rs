//! Gives every User exactly one Contact, so that signing up is enough to be enrolled into contact
//! groups (the enrollment controller then fires on the new Contact).
//!
//! The root kind is User. A User whose linked Contact exists gets that Contact's email and names
//! kept in line with its own; a User without one adopts an unlinked Contact that already has its
//! email (case-insensitively), or else gets `user-<name>` created in the contact namespace. The
//! subject of a Contact is never changed once set (the webhook forbids it): adoption only sets it
//! on a Contact that has none. Duplicates are reported, never deleted.
//!
//! The view's change feed wakes the User a change concerns (see [`users_to_wake`]); a periodic
//! resync covers what the feed cannot attribute, such as the deletion of a Contact with a name
//! not derived from its User. Logs carry object keys only: email addresses stay out of them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::kubeapi::{self, Created};
use super::runner::{self, Driver, ObjectKey};
use super::{Action, Context, ControllerKind, Error, instrumented, names, object_key, retry_after};
use crate::api::IAM_GROUP;
use crate::api::notification::{ContactSpec, SubjectRef};
use crate::api::{Contact, User};
use crate::view::records::names_digest;
use crate::view::{ContactView, Store, ViewChange, ViewKind};

/// How soon to look again when the view is behind the API server (not yet synced, or it still
/// lists a Contact the API server no longer has).
const VIEW_LAG_RETRY: Duration = Duration::from_secs(2);
/// Prefix of the Contact names this controller creates, for mapping a deleted Contact back.
const NAME_PREFIX: &str = "user-";

/// Where a Contact lives: the key logs, events and plans name it by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ContactKey {
    fn of(contact: &ContactView<'_>) -> Self {
        Self {
            namespace: contact.key.namespace.to_owned(),
            name: contact.key.name.to_owned(),
        }
    }
}

impl std::fmt::Display for ContactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&object_key(Some(&self.namespace), &self.name))
    }
}

/// What a User needs, decided from the view alone so it can be tested without an API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The User is being deleted: its Contact is garbage-collected with it (ownerReference).
    Skip,
    /// The User's Contact exists: keep its email and names equal to the User's. `duplicates` are
    /// further Contacts linked to the same User (only a race or a disabled webhook makes them);
    /// they are reported and left alone.
    Sync {
        /// The Contact kept in sync.
        contact: ContactKey,
        /// Other Contacts linked to the User.
        duplicates: Vec<ContactKey>,
    },
    /// No Contact is linked, but an unlinked one has the User's email: link it rather than
    /// create a second Contact the email-uniqueness rule would refuse.
    Adopt {
        /// The Contact to link.
        contact: ContactKey,
    },
    /// No Contact has the User's email: create the User's own.
    Create {
        /// Where to create it (`names::user_contact` in the contact namespace).
        contact: ContactKey,
    },
    /// The User's email belongs to a Contact linked to another subject: nothing can be created
    /// or adopted until one of them changes.
    Conflict {
        /// The Contact holding the email.
        contact: ContactKey,
    },
}

/// Decides what `user` needs, given the view's contacts. Deterministic, so that every replica
/// and every retry picks the same Contact: the User's own `user-<name>` first, else the first by
/// namespace/name.
pub fn plan(user: &User, store: &Store, contact_namespace: &str) -> Plan {
    if user.meta().deletion_timestamp.is_some() {
        return Plan::Skip;
    }
    let name = user.name_any();
    let own = ContactKey {
        namespace: contact_namespace.to_owned(),
        name: names::user_contact(&name),
    };
    let mut linked: Vec<ContactKey> = store
        .contacts_by_user(&name)
        .filter(|c| c.subject.is_some_and(|s| s.api_group == IAM_GROUP))
        .map(|c| ContactKey::of(&c))
        .collect();
    if !linked.is_empty() {
        linked.sort();
        let chosen = linked.iter().position(|k| *k == own).unwrap_or(0);
        let contact = linked.remove(chosen);
        return Plan::Sync {
            contact,
            duplicates: linked,
        };
    }
    let mut same_email: Vec<(bool, ContactKey)> = store
        .contacts_by_email(&user.spec.email)
        .map(|c| (c.subject.is_none(), ContactKey::of(&c)))
        .collect();
    same_email.sort();
    if let Some((_, contact)) = same_email.iter().find(|(unlinked, _)| *unlinked) {
        return Plan::Adopt {
            contact: contact.clone(),
        };
    }
    match same_email.into_iter().next() {
        Some((_, contact)) => Plan::Conflict { contact },
        None => Plan::Create { contact: own },
    }
}

/// Whether reconciling `user` would do anything, decided from the view alone: a Contact to
/// create or adopt, or a linked Contact whose email or names differ from the User's. What the
/// sweep and the wake-ups filter on, so a User whose Contact is current costs no reconcile.
pub fn needs_work(user: &User, store: &Store, contact_namespace: &str) -> bool {
    match plan(user, store, contact_namespace) {
        Plan::Skip => false,
        Plan::Sync { contact, .. } => {
            let Some(found) = store.contact(&contact.namespace, &contact.name) else {
                return true;
            };
            // The view keeps digests of names, not names: the User's from the view (a
            // rebuilt User carries none), or from `user` itself when the view lacks it.
            let wanted = store
                .user_names_digest(&user.name_any())
                .unwrap_or_else(|| {
                    names_digest(
                        user.spec.given_name.as_deref(),
                        user.spec.family_name.as_deref(),
                    )
                });
            found.email != user.spec.email
                || store.contact_names_digest(&contact.namespace, &contact.name) != Some(wanted)
        }
        Plan::Adopt { .. } | Plan::Create { .. } | Plan::Conflict { .. } => true,
    }
}

/// Which Users a change in the view concerns, among those whose reconcile would do anything.
/// Relists are handled apart (they run the sweep), and so are changes this controller cannot
/// attribute, which the periodic sweep covers.
pub fn users_to_wake(
    change: &ViewChange,
    store: &Store,
    contact_namespace: &str,
) -> Vec<ObjectKey> {
    let names: Vec<String> = match change {
        ViewChange::Applied(ViewKind::User, _, name) => vec![name.clone()],
        ViewChange::Applied(ViewKind::Contact, namespace, name) => {
            match store.contact(namespace, name) {
                Some(contact) => match contact.subject {
                    Some(s) if s.kind == "User" && s.api_group == IAM_GROUP => {
                        vec![s.name.to_owned()]
                    }
                    Some(_) => Vec::new(),
                    None => store
                        .users_by_email(contact.email)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                },
                None => Vec::new(),
            }
        }
        ViewChange::Deleted(ViewKind::Contact, _, name) => name
            .strip_prefix(NAME_PREFIX)
            .filter(|user| store.user(user).is_some())
            .map(|user| vec![user.to_owned()])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    names
        .iter()
        .filter(|n| {
            store
                .user_object(n)
                .is_some_and(|u| needs_work(&u, store, contact_namespace))
        })
        .map(|n| ObjectKey::new("", n))
        .collect()
}

/// The Users whose reconcile would do anything, decided in memory.
pub fn sweep(store: &Store, contact_namespace: &str) -> Vec<ObjectKey> {
    store
        .names(ViewKind::User)
        .into_iter()
        .filter(|(_, name)| {
            store
                .user_object(name)
                .is_some_and(|u| needs_work(&u, store, contact_namespace))
        })
        .map(|(_, name)| ObjectKey::new("", &name))
        .collect()
}

/// Reconciles one User: ensures it has its Contact and that the Contact carries its email and
/// names. Healthy Users wait for a change.
pub async fn reconcile(user: Arc<User>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(None, &user.name_any());
    instrumented(&ctx, ControllerKind::UserContact, key, apply(&user, &ctx)).await
}

/// Runs the controller until its task is aborted (when leadership is lost).
pub async fn run(ctx: Arc<Context>) {
    let namespace = ctx.settings.contact_namespace.clone();
    let wake_namespace = namespace.clone();
    let driver = Driver {
        kind: ControllerKind::UserContact,
        concurrency: ctx.settings.concurrency,
        resync: ctx.settings.resync,
        relists: &[ViewKind::User, ViewKind::Contact],
        wake_delay: Duration::ZERO,
        sweep: move |store: &Store| sweep(store, &namespace),
        wake: move |change: &ViewChange, store: &Store| {
            users_to_wake(change, store, &wake_namespace)
        },
        depth: ctx.queue_depth(ControllerKind::UserContact),
    };
    let ctx = &ctx;
    runner::drive(&ctx.view, driver, |key| async move {
        // Only Users with something to write are queued, and a write needs the names the view
        // keeps only a digest of: read the User.
        let users: Api<User> = Api::all(ctx.client.clone());
        let found = match kubeapi::get(&users, &key.name).await {
            Ok(found) => found,
            Err(error) => {
                let error = Error::Kube(error);
                return retry_after(ctx, ControllerKind::UserContact, &key.name, &error);
            }
        };
        let Some(user) = found else {
            return Action::await_change();
        };
        match reconcile(Arc::new(user), ctx.clone()).await {
            Ok(action) => action,
            Err(error) => retry_after(ctx, ControllerKind::UserContact, &key.name, &error),
        }
    })
    .await;
}

/// Whether a reconcile finished, or found the view behind the API server.
enum Outcome {
    Done,
    ViewLagging,
}

async fn apply(user: &User, ctx: &Context) -> Result<Action, Error> {
    if !ctx.view.is_synced() {
        tracing::debug!("view not synced yet; waiting");
        return Ok(Action::requeue(VIEW_LAG_RETRY));
    }
    let plan = plan(user, &ctx.view.read(), &ctx.settings.contact_namespace);
    let outcome = match plan {
        Plan::Skip => return Ok(Action::await_change()),
        Plan::Sync {
            contact,
            duplicates,
        } => {
            if !duplicates.is_empty() {
                let duplicates: Vec<String> = duplicates.iter().map(|k| k.to_string()).collect();
                tracing::warn!(%contact, ?duplicates, "user has more than one contact; keeping one in sync, deleting none");
            }
            sync(user, ctx, &contact).await?
        }
        Plan::Adopt { contact } => {
            adopt(user, ctx, &contact).await?;
            Outcome::Done
        }
        Plan::Create { contact } => create(user, ctx, &contact).await?,
        Plan::Conflict { contact } => {
            return Err(Error::Invalid(format!(
                "the user's email belongs to contact {contact}, which is linked to another subject; \
                 no contact can be created or adopted for this user"
            )));
        }
    };
    Ok(match outcome {
        Outcome::Done => Action::await_change(),
        Outcome::ViewLagging => Action::requeue(VIEW_LAG_RETRY),
    })
}

fn contacts(ctx: &Context, key: &ContactKey) -> Api<Contact> {
    Api::namespaced(ctx.client.clone(), &key.namespace)
}

/// Reads the linked Contact from the API server (the view keeps no names) and patches what
/// differs from the User.
async fn sync(user: &User, ctx: &Context, key: &ContactKey) -> Result<Outcome, Error> {
    match kubeapi::get(&contacts(ctx, key), &key.name).await? {
        Some(contact) if is_linked_to(&contact, &user.name_any()) => {
            update(user, ctx, key, &contact).await?;
            Ok(Outcome::Done)
        }
        _ => {
            tracing::debug!(contact = %key, "the view's linked contact is gone; retrying soon");
            Ok(Outcome::ViewLagging)
        }
    }
}

async fn update(
    user: &User,
    ctx: &Context,
    key: &ContactKey,
    contact: &Contact,
) -> Result<(), Error> {
    let Some(patch) = sync_patch(user, &contact.spec) else {
        return Ok(());
    };
    let fields: Vec<&String> = patch["spec"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .collect();
    kubeapi::merge_patch(&contacts(ctx, key), &key.name, &patch)
        .await
        .map_err(|e| write_error(e, "update", key))?;
    tracing::info!(contact = %key, ?fields, "updated contact from its user");
    let note = format!("Updated Contact {key} from the User");
    ctx.event(&user.object_ref(&()), "ContactUpdated", "Update", note)
        .await;
    Ok(())
}

/// Links an unlinked Contact to the User (and brings its email and names in line).
async fn adopt(user: &User, ctx: &Context, key: &ContactKey) -> Result<(), Error> {
    let mut patch = json!({ "spec": names_and_email(user) });
    patch["spec"]["subject"] = serde_json::to_value(subject(user)).unwrap_or_default();
    kubeapi::merge_patch(&contacts(ctx, key), &key.name, &patch)
        .await
        .map_err(|e| write_error(e, "adoption", key))?;
    tracing::info!(contact = %key, "adopted unlinked contact with the user's email");
    let note = format!("Linked existing Contact {key} to the User");
    ctx.event(&user.object_ref(&()), "ContactAdopted", "Adopt", note)
        .await;
    Ok(())
}

/// Creates the User's own Contact. Finding it already there (a retry, a restart, a view that
/// has not seen our last create) is fine when it is ours or adoptable; anything else holding
/// the name is an error.
async fn create(user: &User, ctx: &Context, key: &ContactKey) -> Result<Outcome, Error> {
    let api = contacts(ctx, key);
    let created = kubeapi::create(&api, &desired(user, key))
        .await
        .map_err(|e| write_error(e, "creation", key))?;
    if created == Created::New {
        tracing::info!(contact = %key, "created contact for user");
        let note = format!("Created Contact {key} for the User");
        ctx.event(&user.object_ref(&()), "ContactCreated", "Create", note)
            .await;
        return Ok(Outcome::Done);
    }
    let Some(existing) = kubeapi::get(&api, &key.name).await? else {
        return Ok(Outcome::ViewLagging);
    };
    if is_linked_to(&existing, &user.name_any()) {
        update(user, ctx, key, &existing).await?;
        return Ok(Outcome::Done);
    }
    if existing.spec.subject.is_none()
        && existing.spec.email.to_lowercase() == user.spec.email.to_lowercase()
    {
        adopt(user, ctx, key).await?;
        return Ok(Outcome::Done);
    }
    Err(Error::Invalid(format!(
        "contact {key}, the name this user's contact gets, is taken by another contact"
    )))
}

fn is_linked_to(contact: &Contact, user: &str) -> bool {
    contact
        .spec
        .subject
        .as_ref()
        .is_some_and(|s| s.api_group == IAM_GROUP && s.kind == "User" && s.name == user)
}

fn subject(user: &User) -> SubjectRef {
    SubjectRef {
        api_group: IAM_GROUP.into(),
        kind: "User".into(),
        name: user.name_any(),
        namespace: None,
    }
}

/// A name as compared and written: an empty one counts as none.
fn present(name: &Option<String>) -> Option<&str> {
    name.as_deref().filter(|n| !n.is_empty())
}

/// The User's email and names as Contact spec fields; an absent name is `null`, which a merge
/// patch reads as "remove".
fn names_and_email(user: &User) -> Value {
    json!({
        "email": user.spec.email,
        "givenName": present(&user.spec.given_name),
        "familyName": present(&user.spec.family_name),
    })
}

/// The merge patch bringing a linked Contact's email and names in line with its User, or `None`
/// when they already are. Only those spec fields: never the subject.
fn sync_patch(user: &User, contact: &ContactSpec) -> Option<Value> {
    let wanted = names_and_email(user);
    let current = json!({
        "email": contact.email,
        "givenName": present(&contact.given_name),
        "familyName": present(&contact.family_name),
    });
    let changed: serde_json::Map<String, Value> = wanted
        .as_object()?
        .iter()
        .filter(|(field, value)| current.get(field.as_str()) != Some(value))
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect();
    (!changed.is_empty()).then(|| json!({ "spec": changed }))
}

/// The Contact created for a User. It names the User as owner, as the mutating webhook would, so
/// deleting the User collects it even where that webhook is not installed.
fn desired(user: &User, key: &ContactKey) -> Contact {
    let owner = user.uid().map(|uid| OwnerReference {
        api_version: User::api_version(&()).into_owned(),
        kind: User::kind(&()).into_owned(),
        name: user.name_any(),
        uid,
        ..OwnerReference::default()
    });
    Contact {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: ContactSpec {
            email: user.spec.email.clone(),
            given_name: present(&user.spec.given_name).map(str::to_owned),
            family_name: present(&user.spec.family_name).map(str::to_owned),
            subject: Some(subject(user)),
        },
        status: None,
    }
}

/// An admission denial's message quotes the offending value (an email address, here), so it is
/// reported by its code and cause reasons only; other errors pass through unchanged.
fn write_error(error: kube::Error, what: &str, key: &ContactKey) -> Error {
    let kube::Error::Api(status) = &error else {
        return Error::Kube(error);
    };
    if !(status.is_invalid() || status.is_forbidden()) {
        return Error::Kube(error);
    }
    let causes = kubeapi::denial_causes(&error);
    let hint = if causes.contains(&"FieldValueDuplicate") {
        " (another contact probably has the user's email)"
    } else {
        ""
    };
    Error::Invalid(format!(
        "{what} of contact {key} was denied: {} {}, causes {causes:?}{hint}",
        status.code, status.reason
    ))
}

#[cfg(test)]
mod tests;
