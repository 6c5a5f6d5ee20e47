//! The invitation controller through the mock API, for both access backends: every request it
//! makes (method, path, body) is checked in order, at a pinned clock.
mod support;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::Role;
use kube::Client;
use milo_webhook::api::iam::ORGANIZATION_MEMBERSHIP_LABEL;
use milo_webhook::api::{EmailTemplate, User, UserInvitation};
use milo_webhook::controllers::Action;
use milo_webhook::controllers::ObjectKey;
use milo_webhook::controllers::invitation::access::{
    AccessBackendKind, INVITATION_LABEL, invitation_object_name,
};
use milo_webhook::controllers::invitation::email::email_name;
use milo_webhook::controllers::invitation::metrics::{InvitationMetrics, ResultLabels};
use milo_webhook::controllers::invitation::plan::FINALIZER;
use milo_webhook::controllers::invitation::rbac::{Binding, membership_binding};
use milo_webhook::controllers::invitation::{
    Clock, InvitationContext, InvitationSettings, invitations_for_user, reconcile,
};
use milo_webhook::controllers::{Context, ControllerSettings, Error};
use milo_webhook::metrics::Metrics;
use milo_webhook::view::{ClusterView, Store, ViewKind};
use serde_json::{Value, json};
use support::mock_api::{self, Exchange, Seen};

use AccessBackendKind::{Milo, Rbac};

const NS: &str = "organization-acme";
const EXPIRES: &str = "2026-11-21T12:05:00Z";
const NOW: &str = "2026-11-21T12:00:00Z";
const BACKENDS: [AccessBackendKind; 2] = [Rbac, Milo];

fn invitation(name: &str, uid: &str, state: &str) -> UserInvitation {
    serde_json::from_value(json!({
        "apiVersion": "iam.miloapis.com/v1alpha1", "kind": "UserInvitation",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "generation": 1,
                     "resourceVersion": "7", "finalizers": [FINALIZER]},
        "spec": {"organizationRef": {"name": "acme"}, "email": "bob@example.com",
                 "givenName": "Bob", "roles": [{"name": "editor"}],
                 "invitedBy": {"name": "alice"}, "expirationDate": EXPIRES, "state": state},
    }))
    .unwrap()
}

/// The status write among the requests seen.
fn written(seen: &[Seen]) -> &Seen {
    seen.iter()
        .find(|s| s.path.ends_with("/status"))
        .expect("a status write")
}

/// The invitation as the API server holds it after the status write the script saw.
fn with_status(mut invitation: UserInvitation, seen: &Seen) -> UserInvitation {
    invitation.status = Some(serde_json::from_value(seen.body["status"].clone()).unwrap());
    invitation
}

/// `state` as answered by the invitee at `when` (what managedFields records).
fn answered(mut invitation: UserInvitation, state: &str, when: &str) -> UserInvitation {
    invitation.spec.state = serde_json::from_value(json!(state)).unwrap();
    invitation.metadata.managed_fields = Some(vec![
        serde_json::from_value(json!({
            "manager": "portal", "operation": "Update", "time": when,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:state": {}}},
        }))
        .unwrap(),
    ]);
    invitation
}

fn store(with_bob: bool) -> Store {
    let mut store = Store::default();
    store.apply_role(
        &serde_json::from_value::<Role>(json!({
            "metadata": {"name": "editor", "namespace": NS}
        }))
        .unwrap(),
    );
    add_template(
        &mut store,
        &milo_webhook::controllers::invitation::email::VARIABLES.map(|n| (n, false)),
    );
    if with_bob {
        add_bob(&mut store);
    }
    store
}

const TEMPLATE: &str = "emailtemplates.notification.miloapis.com-userinvitationemailtemplate";

/// The invitation EmailTemplate in the view, declaring `variables` (name, required).
fn add_template(store: &mut Store, variables: &[(&str, bool)]) {
    let variables: Vec<Value> = variables
        .iter()
        .map(|(name, required)| json!({"name": name, "required": required, "type": "string"}))
        .collect();
    store.apply_email_template(
        &serde_json::from_value::<EmailTemplate>(json!({
            "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
            "metadata": {"name": TEMPLATE},
            "spec": {"subject": "s", "htmlBody": "h", "textBody": "t", "variables": variables},
        }))
        .unwrap(),
    );
}

fn add_bob(store: &mut Store) {
    store.apply_user(
        &serde_json::from_value::<User>(json!({
            "apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User",
            "metadata": {"name": "bob", "uid": "bob-uid"},
            "spec": {"email": "Bob@Example.COM"},
        }))
        .unwrap(),
    );
}

fn context(
    client: Client,
    backend: AccessBackendKind,
    store: Store,
    now: &str,
) -> Arc<InvitationContext> {
    context_with(
        client,
        backend,
        Arc::new(ClusterView::offline(store)),
        now,
        Duration::from_secs(600),
    )
}

fn context_with(
    client: Client,
    backend: AccessBackendKind,
    view: Arc<ClusterView>,
    now: &str,
    resync: Duration,
) -> Arc<InvitationContext> {
    let settings = ControllerSettings {
        resync,
        ..ControllerSettings::default()
    };
    let shared = Arc::new(Context::new(
        client,
        view,
        Arc::new(Metrics::default()),
        settings,
        None,
    ));
    let invitation_settings = InvitationSettings {
        access_backend: backend,
        ..InvitationSettings::default()
    };
    let now: Timestamp = now.parse().unwrap();
    Arc::new(InvitationContext::new(shared, invitation_settings).with_clock(Clock::Fixed(now)))
}

/// Runs one reconcile against `script`; returns its result and what the server saw.
async fn run(
    scenario: &'static str,
    backend: AccessBackendKind,
    store: Store,
    now: &str,
    invitation: &UserInvitation,
    script: Vec<Exchange>,
) -> (Result<Action, Error>, Vec<Seen>, Arc<Metrics>) {
    let (client, server) = mock_api::client_as(support::rbac::INVITATIONS);
    let ctx = context(client, backend, store, now);
    finish(ctx, invitation, server.run(scenario, script)).await
}

/// Runs one reconcile with `ctx` while `script` answers; returns its result, what the server
/// saw and the metrics.
async fn finish(
    ctx: Arc<InvitationContext>,
    invitation: &UserInvitation,
    script: tokio::task::JoinHandle<Vec<Seen>>,
) -> (Result<Action, Error>, Vec<Seen>, Arc<Metrics>) {
    let metrics = ctx.shared.metrics.clone();
    let result = reconcile(Arc::new(invitation.clone()), ctx).await;
    let seen = script
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    (result, seen, metrics)
}

// --- the requests ---------------------------------------------------------------------------

fn invitation_path(name: &str) -> String {
    format!("/apis/iam.miloapis.com/v1alpha1/namespaces/{NS}/userinvitations/{name}")
}

fn ok_status() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
}

fn add_finalizer(invitation: &UserInvitation) -> Exchange {
    Exchange::patch(&invitation_path(&invitation.metadata.name.clone().unwrap()))
        .body(json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "7"}}))
        .respond(json!(invitation))
}

fn status(invitation: &UserInvitation, pattern: Value) -> Exchange {
    let name = invitation.metadata.name.clone().unwrap();
    Exchange::patch(&format!("{}/status", invitation_path(&name)))
        .query("fieldManager=milo-webhook")
        .query("force=true")
        .body(json!({"kind": "UserInvitation", "status": pattern}))
        .respond(json!(invitation))
}

fn conditions(ready: (&str, &str), pending: (&str, &str), expired: (&str, &str)) -> Value {
    let c = |t: &str, (s, r): (&str, &str)| json!({"type": t, "status": s, "reason": r});
    json!([
        c("Ready", ready),
        c("Pending", pending),
        c("Expired", expired)
    ])
}

fn organization(backend: AccessBackendKind) -> Exchange {
    let annotations = json!({"kubernetes.io/display-name": "Acme Inc"});
    match backend {
        Rbac => Exchange::get(&format!("/api/v1/namespaces/{NS}")).respond(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "annotations": annotations},
        })),
        Milo => Exchange::get("/apis/resourcemanager.miloapis.com/v1alpha1/organizations/acme")
            .respond(json!({
                "apiVersion": "resourcemanager.miloapis.com/v1alpha1", "kind": "Organization",
                "metadata": {"name": "acme", "annotations": annotations},
                "spec": {"type": "Standard"},
            })),
    }
}

fn inviter() -> Exchange {
    Exchange::get("/apis/iam.miloapis.com/v1alpha1/users/alice").respond(json!({
        "apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User",
        "metadata": {"name": "alice", "uid": "alice-uid"},
        "spec": {"email": "alice@example.com", "givenName": "Alice", "familyName": "Admin"},
    }))
}

/// The lookups of a first reconcile: organization and inviter (the template is in the view).
fn lookups(backend: AccessBackendKind) -> Vec<Exchange> {
    vec![organization(backend), inviter()]
}

fn email(invitation: &UserInvitation) -> Exchange {
    let name = invitation.metadata.name.clone().unwrap();
    let var = |n: &str, v: &str| json!({"name": n, "value": v});
    let email = json!({
        "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Email",
        "metadata": {"name": email_name(invitation), "namespace": NS,
                     "labels": {INVITATION_LABEL: name},
                     "ownerReferences": [{"kind": "UserInvitation", "name": name,
                                          "uid": invitation.metadata.uid, "controller": true}]},
        "spec": {
            "templateRef": {"name": "emailtemplates.notification.miloapis.com-userinvitationemailtemplate"},
            "recipient": {"emailAddress": "bob@example.com"},
            "variables": [
                var("OrganizationDisplayName", "Acme Inc"),
                var("InviterDisplayName", "Alice Admin"),
                var("InviterEmail", "alice@example.com"),
                var("RecipientName", "Bob"),
                var("Roles", "editor"),
                var("ExpirationDate", EXPIRES),
                var("UserInvitationName", &name),
                var("InvitationLink", &format!("https://cloud.datum.net/invitations/acme/{name}")),
            ],
        },
    });
    Exchange::post(&format!(
        "/apis/notification.miloapis.com/v1alpha1/namespaces/{NS}/emails"
    ))
    .body(email.clone())
    .respond(email)
}

fn policy_binding_path(invitation: &UserInvitation, which: &str) -> String {
    format!(
        "/apis/iam.miloapis.com/v1alpha1/namespaces/{NS}/policybindings/{}",
        invitation_object_name(invitation, Some(which))
    )
}

fn rbac_path(kind: &str, invitation: &UserInvitation) -> String {
    format!(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/{kind}/{}",
        invitation_object_name(invitation, None)
    )
}

/// Granting bob access to `invitation`.
fn grant(backend: AccessBackendKind, invitation: &UserInvitation) -> Vec<Exchange> {
    let name = invitation.metadata.name.clone().unwrap();
    let uid = invitation.metadata.uid.clone().unwrap();
    let owned = json!({"labels": {INVITATION_LABEL: name},
                       "ownerReferences": [{"kind": "UserInvitation", "uid": uid}]});
    let apply = |path: String| {
        Exchange::patch(&path)
            .query("fieldManager=milo-webhook")
            .query("force=true")
    };
    match backend {
        Rbac => {
            let object = invitation_object_name(invitation, None);
            let role = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": object, "namespace": NS},
                "rules": [{"apiGroups": ["iam.miloapis.com"], "resources": ["userinvitations"],
                           "resourceNames": [name], "verbs": ["get", "update", "patch"]}],
            });
            let binding = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": object, "namespace": NS},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": object},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
            });
            let mut role_pattern = role.clone();
            role_pattern["metadata"] = merge(&role["metadata"], &owned);
            let mut binding_pattern = binding.clone();
            binding_pattern["metadata"] = merge(&binding["metadata"], &owned);
            vec![
                apply(rbac_path("roles", invitation))
                    .body(role_pattern)
                    .respond(role),
                apply(rbac_path("rolebindings", invitation))
                    .body(binding_pattern)
                    .respond(binding),
            ]
        }
        Milo => ["get", "accept"]
            .into_iter()
            .map(|which| {
                let binding = json!({
                    "apiVersion": "iam.miloapis.com/v1alpha1", "kind": "PolicyBinding",
                    "metadata": {"name": invitation_object_name(invitation, Some(which)),
                                 "namespace": NS},
                    "spec": {
                        "roleRef": {"name": format!("iam.miloapis.com-{which}invitation"),
                                    "namespace": "milo-system"},
                        "subjects": [{"kind": "User", "name": "bob", "uid": "bob-uid"}],
                        "resourceSelector": {"resourceRef": {
                            "apiGroup": "iam.miloapis.com", "kind": "UserInvitation",
                            "name": name, "namespace": NS, "uid": uid}},
                    },
                });
                let mut pattern = binding.clone();
                pattern["metadata"] = merge(&binding["metadata"], &owned);
                apply(policy_binding_path(invitation, which))
                    .body(pattern)
                    .respond(binding)
            })
            .collect(),
    }
}

fn merge(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    for (k, v) in b.as_object().unwrap() {
        out[k] = v.clone();
    }
    out
}

/// Revoking every grant on `invitation`; `gone` answers the first delete with 404.
fn revoke(backend: AccessBackendKind, invitation: &UserInvitation, gone: bool) -> Vec<Exchange> {
    let paths = match backend {
        Rbac => vec![
            rbac_path("rolebindings", invitation),
            rbac_path("roles", invitation),
        ],
        Milo => vec![
            policy_binding_path(invitation, "get"),
            policy_binding_path(invitation, "accept"),
        ],
    };
    paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let delete = Exchange::delete(&path);
            if gone && i == 0 {
                delete.not_found()
            } else {
                delete.respond(ok_status())
            }
        })
        .collect()
}

fn membership_path() -> String {
    format!("/apis/resourcemanager.miloapis.com/v1alpha1/namespaces/{NS}/organizationmemberships")
}

fn membership(roles: Value) -> Value {
    json!({
        "apiVersion": "resourcemanager.miloapis.com/v1alpha1", "kind": "OrganizationMembership",
        "metadata": {"name": "member-bob", "namespace": NS, "resourceVersion": "42"},
        "spec": {"organizationRef": {"name": "acme"}, "userRef": {"name": "bob"}, "roles": roles},
    })
}

/// Assigning the invitation's role (`editor`) to bob. For milo, `existing` is the membership's
/// roles before, or `None` when bob has no membership yet.
fn assign(
    backend: AccessBackendKind,
    invitation: &UserInvitation,
    existing: Option<Value>,
) -> Vec<Exchange> {
    match backend {
        Rbac => {
            let binding = membership_binding(
                invitation,
                "bob",
                &Binding {
                    kind: "Role",
                    role: "editor".into(),
                },
            );
            let body = json!(binding);
            assert!(body["metadata"].get("ownerReferences").is_none());
            vec![
                Exchange::post(&format!(
                    "/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings"
                ))
                .body(json!({
                    "metadata": {"name": binding.metadata.name, "namespace": NS,
                                 "labels": {ORGANIZATION_MEMBERSHIP_LABEL: "true",
                                            INVITATION_LABEL: invitation.metadata.name}},
                    "roleRef": {"kind": "Role", "name": "editor"},
                    "subjects": [{"kind": "User", "name": "bob"}],
                }))
                .without("metadata.ownerReferences")
                .respond(body),
            ]
        }
        Milo => {
            let get = Exchange::get(&format!("{}/member-bob", membership_path()));
            match existing {
                Some(roles) => {
                    let mut merged = roles.as_array().unwrap().clone();
                    merged.push(json!({"name": "editor"}));
                    vec![
                        get.respond(membership(roles)),
                        Exchange::patch(&format!("{}/member-bob", membership_path()))
                            .body(json!({"metadata": {"resourceVersion": "42"},
                                         "spec": {"roles": merged}}))
                            .respond(membership(json!(merged))),
                    ]
                }
                None => vec![
                    get.not_found(),
                    Exchange::post(&membership_path())
                        .body(json!({
                            "metadata": {"name": "member-bob", "namespace": NS,
                                         "labels": {INVITATION_LABEL: invitation.metadata.name}},
                            "spec": {"organizationRef": {"name": "acme"},
                                     "userRef": {"name": "bob"}, "roles": [{"name": "editor"}]},
                        }))
                        .without("metadata.ownerReferences")
                        .respond(membership(json!([{"name": "editor"}]))),
                ],
            }
        }
    }
}

fn event(reason: &str) -> Exchange {
    Exchange::event(NS, reason)
}

fn script(parts: Vec<Vec<Exchange>>) -> Vec<Exchange> {
    parts.into_iter().flatten().collect()
}

fn pending_with_bob() -> Value {
    json!({
        "organization": {"displayName": "Acme Inc"},
        "inviterUser": {"displayName": "Alice Admin", "emailAddress": "alice@example.com"},
        "inviteeUser": {"name": "bob"},
        "conditions": conditions(("False", "Pending"), ("True", "Pending"), ("False", "NotExpired")),
    })
}

/// A first reconcile of `invitation` with bob signed up: returns the status it wrote.
async fn introduce(backend: AccessBackendKind, invitation: &UserInvitation) -> Seen {
    let mut fresh = invitation.clone();
    fresh.metadata.finalizers = None;
    let steps = script(vec![
        lookups(backend),
        vec![add_finalizer(&fresh)],
        grant(backend, &fresh),
        vec![email(&fresh), status(&fresh, pending_with_bob())],
        vec![event("InvitationSent"), event("AccessGranted")],
    ]);
    let (result, seen, metrics) =
        run("invitee exists", backend, store(true), NOW, &fresh, steps).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(Duration::from_secs(300)),
        "{backend:?}"
    );
    let m = InvitationMetrics::of(&metrics);
    assert_eq!((m.created.get(), m.pending.get()), (1, 1));
    assert_eq!(m.emails.get_or_create(&result_label("created")).get(), 1);
    written(&seen).clone()
}

fn result_label(result: &str) -> ResultLabels {
    ResultLabels {
        result: result.into(),
    }
}

// --- the scenarios --------------------------------------------------------------------------

#[tokio::test]
async fn invitee_exists_gets_access_and_exactly_one_email() {
    for backend in BACKENDS {
        let invitation = invitation("welcome-bob", "uid-1", "Pending");
        let seen = introduce(backend, &invitation).await;
        // Nothing changed: the next reconcile writes nothing and waits for the expiry.
        let settled = with_status(invitation, &seen);
        let (result, requests, _) =
            run("steady", backend, store(true), NOW, &settled, vec![]).await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
        assert!(requests.is_empty());
    }
}

#[tokio::test]
async fn invitee_signs_up_later() {
    for backend in BACKENDS {
        let invitation = invitation("welcome-bob", "uid-1", "Pending");
        let steps = script(vec![
            lookups(backend),
            vec![
                email(&invitation),
                status(&invitation, json!({
                    "organization": {"displayName": "Acme Inc"},
                    "conditions": conditions(("False", "Pending"), ("True", "Pending"), ("False", "NotExpired")),
                }))
                .without("status.inviteeUser"),
                event("InvitationSent"),
            ],
        ]);
        let (result, seen, _) = run(
            "no user yet",
            backend,
            store(false),
            NOW,
            &invitation,
            steps,
        )
        .await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
        let waiting = with_status(invitation, written(&seen));
        // Bob signs up (with different capitalization): the view's feed names him, and the
        // invitation is what his User change wakes.
        let mut view = store(false);
        add_bob(&mut view);
        let woken = invitations_for_user(&view, &[Arc::new(waiting.clone())], "bob");
        assert_eq!(
            woken,
            [ObjectKey::new(
                waiting.metadata.namespace.as_deref().unwrap_or_default(),
                waiting.metadata.name.as_deref().unwrap_or_default()
            )]
        );
        let steps = script(vec![
            grant(backend, &waiting),
            vec![status(&waiting, pending_with_bob()), event("AccessGranted")],
        ]);
        let later = "2026-11-21T12:01:00Z";
        let (result, _, metrics) = run("signed up", backend, view, later, &waiting, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(240)));
        assert_eq!(InvitationMetrics::of(&metrics).pending.get(), 1);
    }
}

#[tokio::test]
async fn accept_assigns_roles_revokes_access_and_deletes_after_retention() {
    for backend in BACKENDS {
        let base = invitation("welcome-bob", "uid-1", "Pending");
        let pending = with_status(base.clone(), &introduce(backend, &base).await);
        let accepted = answered(pending, "Accepted", "2026-11-21T12:02:00Z");
        let steps = script(vec![
            assign(backend, &accepted, Some(json!([{"name": "owner"}]))),
            revoke(backend, &accepted, false),
            vec![
                status(
                    &accepted,
                    json!({
                        "acceptedAt": "2026-11-21T12:02:00Z",
                        "inviteeUser": {"name": "bob"},
                        "organization": {"displayName": "Acme Inc"},
                        "conditions": conditions(("True", "Accepted"), ("False", "Accepted"), ("False", "Answered")),
                    }),
                ),
                event("Accepted"),
            ],
        ]);
        let (client, server) = mock_api::client_as(support::rbac::INVITATIONS);
        let view = Arc::new(ClusterView::offline(store(true)));
        let long_resync = Duration::from_secs(30 * 24 * 3600);
        let ctx = context_with(
            client,
            backend,
            view.clone(),
            "2026-11-21T12:03:00Z",
            long_resync,
        );
        let (result, seen, metrics) = finish(ctx, &accepted, server.run("accept", steps)).await;
        // Kept for the retention period (7 days from the acceptance), then deleted.
        let retention = Duration::from_secs(7 * 24 * 3600 - 60);
        assert_eq!(result.unwrap(), Action::requeue(retention), "{backend:?}");
        let m = InvitationMetrics::of(&metrics);
        assert_eq!((m.accepted.get(), m.pending.get()), (1, 0));
        assert_eq!(
            m.role_assignments
                .get_or_create(&result_label("success"))
                .get(),
            1
        );
        let done = with_status(accepted, written(&seen));
        let (client, server) = mock_api::client_as(support::rbac::INVITATIONS);
        let ctx = context_with(
            client,
            backend,
            view.clone(),
            "2026-11-28T12:02:00Z",
            long_resync,
        );
        let delete = Exchange::delete(&invitation_path("welcome-bob")).respond(ok_status());
        let (result, _, _) = finish(ctx, &done, server.run("retention", vec![delete])).await;
        assert_eq!(result.unwrap(), Action::await_change());
    }
}

#[tokio::test]
async fn a_membership_is_created_when_the_user_has_none() {
    let base = invitation("welcome-bob", "uid-1", "Pending");
    let pending = with_status(base.clone(), &introduce(Milo, &base).await);
    let accepted = answered(pending, "Accepted", "2026-11-21T12:02:00Z");
    let steps = script(vec![
        assign(Milo, &accepted, None),
        revoke(Milo, &accepted, false),
        vec![
            status(&accepted, json!({"acceptedAt": "2026-11-21T12:02:00Z"})),
            event("Accepted"),
        ],
    ]);
    let (result, _, _) = run("new membership", Milo, store(true), NOW, &accepted, steps).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(600)));
}

#[tokio::test]
async fn decline_revokes_access() {
    for backend in BACKENDS {
        let base = invitation("welcome-bob", "uid-1", "Pending");
        let pending = with_status(base.clone(), &introduce(backend, &base).await);
        let declined = answered(pending, "Declined", "2026-11-21T12:02:00Z");
        let steps = script(vec![
            revoke(backend, &declined, false),
            vec![
                status(&declined, json!({
                    "inviteeUser": {"name": "bob"},
                    "conditions": conditions(("True", "Declined"), ("False", "Declined"), ("False", "Answered")),
                }))
                .without("status.acceptedAt"),
                event("Declined"),
            ],
        ]);
        let (result, seen, metrics) =
            run("decline", backend, store(true), NOW, &declined, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(600)));
        assert_eq!(InvitationMetrics::of(&metrics).declined.get(), 1);
        // Declined is final: nothing more happens.
        let done = with_status(declined, written(&seen));
        let (result, requests, _) = run("declined", backend, store(true), NOW, &done, vec![]).await;
        assert!(requests.is_empty());
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(600)));
    }
}

#[tokio::test]
async fn expiry_fires_at_the_instant_without_another_event() {
    for backend in BACKENDS {
        let base = invitation("welcome-bob", "uid-1", "Pending");
        let pending = with_status(base.clone(), &introduce(backend, &base).await);
        // 90 seconds before: no request, and the requeue is for exactly the remaining time.
        let (result, requests, _) = run(
            "before expiry",
            backend,
            store(true),
            "2026-11-21T12:03:30Z",
            &pending,
            vec![],
        )
        .await;
        assert!(requests.is_empty());
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(90)));
        // That requeue is the only trigger: at the instant, access is revoked.
        let steps = script(vec![
            revoke(backend, &pending, false),
            vec![
                status(
                    &pending,
                    json!({
                        "inviteeUser": {"name": "bob"},
                        "conditions": conditions(("True", "Expired"), ("False", "Expired"), ("True", "Expired")),
                    }),
                ),
                event("Expired"),
            ],
        ]);
        let (result, _, metrics) =
            run("expiry", backend, store(true), EXPIRES, &pending, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(600)));
        let m = InvitationMetrics::of(&metrics);
        assert_eq!((m.expired.get(), m.pending.get()), (1, 0));
    }
}

#[tokio::test]
async fn accept_after_expiry_assigns_nothing_and_stays_consistent() {
    // The webhook refuses this update (webhooks/invitation-update-accept-after-expiry.yaml); if
    // it happens anyway (the webhook bypassed), the controller assigns nothing and says so.
    for backend in BACKENDS {
        let base = invitation("welcome-bob", "uid-1", "Pending");
        let pending = with_status(base.clone(), &introduce(backend, &base).await);
        let late = answered(pending, "Accepted", "2026-11-21T12:06:00Z");
        let steps = script(vec![
            revoke(backend, &late, true),
            vec![
                status(&late, json!({
                    "conditions": conditions(("False", "AcceptedAfterExpiry"), ("False", "Expired"), ("True", "Expired")),
                }))
                .without("status.acceptedAt"),
                event("Expired"),
            ],
        ]);
        let (result, seen, metrics) = run(
            "late accept",
            backend,
            store(true),
            "2026-11-21T12:07:00Z",
            &late,
            steps,
        )
        .await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(600)));
        let m = InvitationMetrics::of(&metrics);
        assert_eq!((m.accepted.get(), m.expired.get()), (0, 1));
        assert_eq!(
            m.role_assignments
                .get_or_create(&result_label("success"))
                .get(),
            0
        );
        let message = written(&seen).body["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains("no roles were assigned"), "{message}");
        let settled = with_status(late, written(&seen));
        let (_, requests, _) = run(
            "late accept settled",
            backend,
            store(true),
            "2026-11-22T00:00:00Z",
            &settled,
            vec![],
        )
        .await;
        assert!(requests.is_empty(), "a final state");
    }
}

#[tokio::test]
async fn deletion_revokes_then_releases_the_finalizer_last() {
    for backend in BACKENDS {
        let base = invitation("welcome-bob", "uid-1", "Pending");
        let mut deleting = with_status(base.clone(), &introduce(backend, &base).await);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW.parse().unwrap()),
        );
        deleting.metadata.finalizers = Some(vec!["example.com/other".into(), FINALIZER.into()]);
        let steps = script(vec![
            // One grant already gone: deletion does not hang on it.
            revoke(backend, &deleting, true),
            vec![
                Exchange::patch(&invitation_path("welcome-bob"))
                    .body(json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "7"}}))
                    .respond(json!(deleting)),
            ],
        ]);
        let (result, _, metrics) =
            run("deletion", backend, store(true), NOW, &deleting, steps).await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(InvitationMetrics::of(&metrics).pending.get(), 0);
    }
}

#[tokio::test]
async fn a_restart_between_email_and_status_creates_no_second_email() {
    for backend in BACKENDS {
        let invitation = invitation("welcome-bob", "uid-1", "Pending");
        let status_fails = status(
            &invitation,
            json!({"organization": {"displayName": "Acme Inc"}}),
        )
        .fail(500, "InternalError", "etcd is down");
        let steps = script(vec![
            lookups(backend),
            grant(backend, &invitation),
            vec![email(&invitation), status_fails],
        ]);
        let (result, _, metrics) =
            run("crash", backend, store(true), NOW, &invitation, steps).await;
        assert!(result.is_err());
        assert_eq!(
            InvitationMetrics::of(&metrics)
                .emails
                .get_or_create(&result_label("created"))
                .get(),
            1
        );
        // The new leader sees nothing recorded and goes again: the Email exists already.
        let steps = script(vec![
            lookups(backend),
            grant(backend, &invitation),
            vec![
                email(&invitation).already_exists(),
                status(&invitation, pending_with_bob()),
                event("InvitationSent"),
                event("AccessGranted"),
            ],
        ]);
        let (result, seen, metrics) =
            run("restart", backend, store(true), NOW, &invitation, steps).await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
        let m = InvitationMetrics::of(&metrics);
        assert_eq!(m.emails.get_or_create(&result_label("created")).get(), 0);
        assert_eq!(m.emails.get_or_create(&result_label("failed")).get(), 0);
        let settled = with_status(invitation, written(&seen));
        let (_, requests, _) =
            run("after restart", backend, store(true), NOW, &settled, vec![]).await;
        assert!(requests.is_empty(), "no third attempt");
    }
}

#[tokio::test]
async fn a_second_invitation_after_a_declined_or_expired_one_works() {
    for backend in BACKENDS {
        for (first_state, answer_at) in [("Declined", "2026-11-21T11:00:00Z"), ("Pending", "")] {
            let mut first = invitation("welcome-bob", "uid-1", first_state);
            if !answer_at.is_empty() {
                first = answered(first, first_state, answer_at);
            } else {
                first.spec.expiration_date =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-11-20T00:00:00Z".parse().unwrap(),
                    ));
            }
            let mut view = store(true);
            view.apply_invitation(&first);
            let second = invitation("welcome-bob-again", "uid-2", "Pending");
            // Nothing of the first invitation's is reused.
            assert_ne!(email_name(&second), email_name(&first));
            assert_ne!(
                invitation_object_name(&second, None),
                invitation_object_name(&first, None)
            );
            let mut fresh = second.clone();
            fresh.metadata.finalizers = None;
            let steps = script(vec![
                lookups(backend),
                vec![add_finalizer(&fresh)],
                grant(backend, &fresh),
                vec![email(&fresh), status(&fresh, pending_with_bob())],
                vec![event("InvitationSent"), event("AccessGranted")],
            ]);
            let (result, seen, _) =
                run("second invitation", backend, view, NOW, &fresh, steps).await;
            assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
            // ... and it can be accepted.
            let accepted = answered(
                with_status(second, written(&seen)),
                "Accepted",
                "2026-11-21T12:01:00Z",
            );
            let steps = script(vec![
                assign(backend, &accepted, None),
                revoke(backend, &accepted, false),
                vec![
                    status(&accepted, json!({"acceptedAt": "2026-11-21T12:01:00Z"})),
                    event("Accepted"),
                ],
            ]);
            let (result, _, _) = run(
                "second accepted",
                backend,
                store(true),
                NOW,
                &accepted,
                steps,
            )
            .await;
            assert!(result.is_ok());
        }
    }
}

#[tokio::test]
async fn a_missing_template_or_organization_is_reported_and_retried() {
    for backend in BACKENDS {
        let invitation = invitation("welcome-bob", "uid-1", "Pending");
        let steps = script(vec![
            vec![organization(backend), inviter()],
            grant(backend, &invitation),
            vec![
                status(&invitation, json!({
                    "inviteeUser": {"name": "bob"},
                    "conditions": conditions(("False", "EmailTemplateNotFound"), ("True", "Pending"), ("False", "NotExpired")),
                }))
                .without("status.organization"),
                event("AccessGranted"),
            ],
        ]);
        let mut no_template = store(true);
        no_template.delete(ViewKind::EmailTemplate, "", TEMPLATE);
        let (result, _, metrics) =
            run("no template", backend, no_template, NOW, &invitation, steps).await;
        let error = result.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("emailtemplates.notification.miloapis.com-userinvitationemailtemplate"),
            "{error}"
        );
        assert_eq!(
            InvitationMetrics::of(&metrics)
                .emails
                .get_or_create(&result_label("failed"))
                .get(),
            1
        );
        let steps = vec![
            organization(backend).not_found(),
            status(
                &invitation,
                json!({
                    "conditions": conditions(("False", "OrganizationNotFound"), ("True", "Pending"), ("False", "NotExpired")),
                }),
            ),
        ];
        let (result, _, _) = run(
            "no organization",
            backend,
            store(false),
            NOW,
            &invitation,
            steps,
        )
        .await;
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("organization \"acme\" not found")
        );
    }
}

#[tokio::test]
async fn a_template_requiring_a_variable_the_controller_cannot_fill_gets_no_email() {
    for backend in BACKENDS {
        let invitation = invitation("welcome-bob", "uid-1", "Pending");
        let mut view = store(true);
        add_template(&mut view, &[("RecipientName", true), ("PromoCode", true)]);
        // No POST of an Email: admission would refuse it, so the controller does not try.
        let steps = script(vec![
            lookups(backend),
            grant(backend, &invitation),
            vec![
                status(&invitation, json!({
                    "inviteeUser": {"name": "bob"},
                    "conditions": conditions(("False", "EmailTemplateVariableUnavailable"), ("True", "Pending"), ("False", "NotExpired")),
                }))
                .without("status.organization"),
                event("AccessGranted"),
            ],
        ]);
        let (result, _, _) = run("unfillable", backend, view, NOW, &invitation, steps).await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("\"PromoCode\""), "{error}");
    }
}

#[tokio::test]
async fn a_role_that_vanished_fails_the_acceptance_visibly() {
    let base = invitation("welcome-bob", "uid-1", "Pending");
    let pending = with_status(base.clone(), &introduce(Rbac, &base).await);
    let accepted = answered(pending, "Accepted", "2026-11-21T12:02:00Z");
    let mut without_role = Store::default();
    add_bob(&mut without_role);
    let steps = vec![
        status(&accepted, json!({
            "conditions": conditions(("False", "RoleNotFound"), ("False", "Accepted"), ("False", "Answered")),
        }))
        .without("status.acceptedAt"),
    ];
    let (result, _, metrics) = run("role gone", Rbac, without_role, NOW, &accepted, steps).await;
    assert!(result.unwrap_err().to_string().contains("editor"));
    assert_eq!(
        InvitationMetrics::of(&metrics)
            .role_assignments
            .get_or_create(&result_label("failure"))
            .get(),
        1
    );
}

#[test]
fn the_alerts_use_only_series_the_binary_exports() {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    let metrics = Metrics::default();
    let m = InvitationMetrics::of(&metrics);
    m.email_created();
    m.email_failed();
    m.roles_assigned();
    m.role_assignment_failed();
    let exported = metrics.encode(&ClusterView::offline(Store::default()));
    let rules: Value = serde_saphyr::from_str(&rules).unwrap();
    let exprs: Vec<&str> = rules["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap())
        .collect();
    assert_eq!(exprs.len(), 5);
    let mut names: Vec<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("milo_webhook_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let sample = exported.lines().any(|line| {
            !line.starts_with('#')
                && line
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
        });
        assert!(sample, "{name} is not exported:\n{exported}");
    }
}

#[tokio::test]
async fn nothing_is_decided_before_the_view_has_listed_the_users() {
    // An unsynced view would say "no User has this address" and revoke the invitee's access.
    let base = invitation("welcome-bob", "uid-1", "Pending");
    let pending = with_status(base.clone(), &introduce(Rbac, &base).await);
    let (client, server) = mock_api::client_as(support::rbac::INVITATIONS);
    let view = Arc::new(ClusterView::unsynced());
    let ctx = context_with(client, Rbac, view, NOW, Duration::from_secs(600));
    let (result, requests, _) = finish(ctx, &pending, server.run("unsynced", vec![])).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
    assert!(requests.is_empty());
}
