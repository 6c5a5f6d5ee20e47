//! (f) A UserInvitation's lifecycle on a real API server with the `rbac` access backend: sent by
//! an organization admin (the mutating webhook names her the inviter), the invitee given access to
//! it through RBAC objects the controller creates, accepted by the invitee with that access, the
//! invited role bound and the access revoked.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::harness::objects::{as_user, condition_true, create, eventually, get, list};
use crate::harness::{CrdSet, Env, EnvOptions, INVITATIONS_USER, SERVER_USER, audit};

use super::user;

const WAIT: Duration = Duration::from_secs(45);
const NS: &str = "organization-acme";
const TEMPLATE: &str = "emailtemplates.notification.miloapis.com-userinvitationemailtemplate";
const INVITATION_LABEL: &str = "iam.miloapis.com/userinvitation";
const MEMBERSHIP_LABEL: &str = "iam.miloapis.com/organization-membership";
const PATH: &str = "/apis/iam.miloapis.com/v1alpha1/namespaces/organization-acme/userinvitations";

fn rbac(kind: &str, name: &str, body: Value) -> Value {
    let mut object = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"namespace": NS, "name": name}});
    for (k, v) in body.as_object().expect("an object") {
        object[k] = v.clone();
    }
    object
}

/// The organization's namespace, the role an invitation grants, alice's right to invite, the
/// invitation EmailTemplate (Milo's name and variables), and the two Users.
async fn organization(env: &Env) {
    let c = &env.client;
    create(
        c,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS,
            "annotations": {"kubernetes.io/display-name": "Acme Inc"}}}),
    )
    .await;
    let rule = |resources: &str, verbs: &[&str]| json!([{"apiGroups": ["iam.miloapis.com"], "resources": [resources], "verbs": verbs}]);
    // The controller's account does not hold `update` on users, so binding editor takes the
    // `bind` the manifests give it on that role by name; owner is not named.
    create(
        c,
        &rbac(
            "Role",
            "editor",
            json!({"rules": rule("users", &["get", "update"])}),
        ),
    )
    .await;
    create(
        c,
        &rbac(
            "Role",
            "owner",
            json!({"rules": rule("users", &["get", "update", "delete"])}),
        ),
    )
    .await;
    create(
        c,
        &rbac(
            "Role",
            "inviter",
            json!({"rules": rule("userinvitations", &["create", "get"])}),
        ),
    )
    .await;
    create(
        c,
        &rbac(
            "RoleBinding",
            "alice-inviter",
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "inviter"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                 "name": "alice"}]}),
        ),
    )
    .await;
    let variables: Vec<Value> = milo_webhook::controllers::invitation::email::VARIABLES
        .iter()
        .map(|n| json!({"name": n, "required": false, "type": "string"}))
        .collect();
    create(
        c,
        &json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
            "metadata": {"name": TEMPLATE}, "spec": {
                "subject": "Join {{.OrganizationDisplayName}}",
                "htmlBody": "<a href=\"{{.InvitationLink}}\">join</a>",
                "textBody": "{{.InviterDisplayName}} invites you: {{.InvitationLink}}",
                "variables": variables}}),
    )
    .await;
    let mut alice = user("alice", "alice@example.com");
    alice["spec"]["givenName"] = json!("Alice");
    alice["spec"]["familyName"] = json!("Admin");
    create(c, &alice).await;
    create(c, &user("bob", "bob@example.com")).await;
    create(c, &user("carol", "carol@example.com")).await;
}

async fn labelled(env: &Env, kind: &str, label: &str, value: &str) -> Vec<Value> {
    list(&env.client, kind, Some(NS))
        .await
        .into_iter()
        .filter(|o| o["metadata"]["labels"][label] == value)
        .collect()
}

/// Invitation, access, acceptance, role binding and revocation, end to end.
pub async fn lifecycle(crds: CrdSet) {
    let env = Env::start(crds, EnvOptions::default()).await;
    let c = &env.client;
    organization(&env).await;
    let invitation = json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "UserInvitation",
        "metadata": {"namespace": NS, "name": "bob-acme"},
        "spec": {"organizationRef": {"name": "acme"}, "email": "bob@example.com",
                 "givenName": "Bob", "roles": [{"name": "editor"}],
                 "invitedBy": {"name": "mallory"}, "state": "Pending"}});
    // alice sends it (with her own RBAC); the inviter she claims is overwritten by who she is.
    let created = as_user(c, "alice", Method::POST, PATH, &invitation)
        .await
        .expect("alice may invite");
    assert_eq!(created["spec"]["invitedBy"]["name"], "alice", "{created}");
    assert!(
        created["spec"]["expirationDate"].is_string(),
        "an expiration date defaulted: {created}"
    );

    let name = "bob-acme";
    let status = eventually("the invitation's status", WAIT, || async {
        let i = get(c, "UserInvitation", Some(NS), name).await.unwrap();
        let s = &i["status"];
        if s["inviteeUser"]["name"] == "bob" && s["inviterUser"]["displayName"].is_string() {
            Ok(i)
        } else {
            Err(s.to_string())
        }
    })
    .await["status"]
        .clone();
    assert_eq!(status["organization"]["displayName"], "Acme Inc");
    assert_eq!(status["inviterUser"]["emailAddress"], "alice@example.com");
    let email = eventually("the invitation Email", WAIT, || async {
        match labelled(&env, "Email", INVITATION_LABEL, name)
            .await
            .as_slice()
        {
            [one] => Ok(one.clone()),
            other => Err(format!("{} Emails", other.len())),
        }
    })
    .await;
    assert_eq!(
        email["spec"]["recipient"]["emailAddress"],
        "bob@example.com"
    );
    assert_eq!(email["spec"]["templateRef"]["name"], TEMPLATE);
    let link = email["spec"]["variables"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "InvitationLink"))
        .expect("an InvitationLink variable");
    assert!(
        link["value"]
            .as_str()
            .is_some_and(|l| l.ends_with("/acme/bob-acme")),
        "{link}"
    );

    // Nobody but the invitee accepts: the admin is refused by the webhook.
    let path = format!("{PATH}/{name}");
    let accept = json!({"spec": {"state": "Accepted"}});
    match objects_patch(c, name, &accept).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message
                    .contains("only the invitee can accept or decline this invitation"),
                "{s:?}"
            );
        }
        other => panic!("the admin accepted bob's invitation: {other:?}"),
    }
    // bob accepts, with the access the controller gave him (RBAC decides as bob).
    eventually("bob accepts", WAIT, || async {
        as_user(c, "bob", Method::PATCH, &path, &accept)
            .await
            .map_err(|e| e.to_string())
    })
    .await;

    let binding = eventually("editor bound to bob", WAIT, || async {
        match labelled(&env, "RoleBinding", MEMBERSHIP_LABEL, "true")
            .await
            .as_slice()
        {
            [one] => Ok(one.clone()),
            other => Err(format!("{} membership bindings", other.len())),
        }
    })
    .await;
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], "editor");
    assert_eq!(binding["subjects"][0]["name"], "bob");
    let accepted = eventually("Ready, Accepted", WAIT, || async {
        let i = get(c, "UserInvitation", Some(NS), name).await;
        match i {
            Some(i) if condition_true(&i, "Ready") => Ok(i),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    if crds == CrdSet::Ours {
        assert!(
            accepted["status"]["acceptedAt"].is_string(),
            "{}",
            accepted["status"]
        );
    }
    // bob's access to the invitation itself is revoked.
    eventually("invitation access revoked", WAIT, || async {
        let roles = labelled(&env, "Role", INVITATION_LABEL, name).await;
        let bindings: Vec<Value> = labelled(&env, "RoleBinding", INVITATION_LABEL, name)
            .await
            .into_iter()
            .filter(|b| b["metadata"]["labels"][MEMBERSHIP_LABEL].is_null())
            .collect();
        if roles.is_empty() && bindings.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} roles, {} bindings",
                roles.len(),
                bindings.len()
            ))
        }
    })
    .await;
    // Only the invitation controller's own account granted anything.
    let rbac_writes = |user: &str| {
        audit::events(&env.plane.audit_log)
            .into_iter()
            .filter(|e| e.user == user)
            .filter(|e| e.resource == "rolebindings" || e.resource == "roles")
            .filter(|e| matches!(e.verb.as_str(), "create" | "patch" | "update"))
            .count()
    };
    assert!(rbac_writes(INVITATIONS_USER) > 0);
    assert_eq!(
        rbac_writes(SERVER_USER),
        0,
        "the webhook's account granted access"
    );

    // A role the manifests do not name cannot be granted, whatever an inviter asks for.
    not_a_role_the_manifests_name(&env).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.assert_server_writes_clean_but(|e| {
        e.user == INVITATIONS_USER && e.resource == "rolebindings" && e.code == 403
    });
}

/// carol is invited as owner, a role outside the `bind` list of `manifests/deploy/rbac.yaml`:
/// she accepts, and the API server refuses the binding the controller tries to make.
async fn not_a_role_the_manifests_name(env: &Env) {
    let c = &env.client;
    let name = "carol-acme";
    let invitation = json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "UserInvitation",
        "metadata": {"namespace": NS, "name": name},
        "spec": {"organizationRef": {"name": "acme"}, "email": "carol@example.com",
                 "givenName": "Carol", "roles": [{"name": "owner"}],
                 "invitedBy": {"name": "alice"}, "state": "Pending"}});
    as_user(c, "alice", Method::POST, PATH, &invitation)
        .await
        .expect("alice may invite");
    let path = format!("{PATH}/{name}");
    let accept = json!({"spec": {"state": "Accepted"}});
    eventually("carol accepts", WAIT, || async {
        as_user(c, "carol", Method::PATCH, &path, &accept)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    eventually("the owner binding refused", WAIT, || async {
        let refused = audit::events(&env.plane.audit_log)
            .into_iter()
            .any(|e| e.user == INVITATIONS_USER && e.resource == "rolebindings" && e.code == 403);
        if refused {
            Ok(())
        } else {
            Err("no refused binding yet".to_owned())
        }
    })
    .await;
    let owners: Vec<Value> = list(c, "RoleBinding", Some(NS))
        .await
        .into_iter()
        .filter(|b| b["roleRef"]["name"] == "owner")
        .collect();
    assert!(owners.is_empty(), "owner was granted: {owners:?}");
    // The invitation says why carol has no access yet.
    eventually("the invitation reports the refusal", WAIT, || async {
        let i = get(c, "UserInvitation", Some(NS), name).await.unwrap();
        let conditions = i["status"]["conditions"].to_string();
        if conditions.contains("forbidden") || conditions.contains("Forbidden") {
            Ok(())
        } else {
            Err(conditions)
        }
    })
    .await;
}

async fn objects_patch(c: &kube::Client, name: &str, patch: &Value) -> Result<Value, kube::Error> {
    crate::harness::objects::merge_patch(c, "UserInvitation", Some(NS), name, patch).await
}
