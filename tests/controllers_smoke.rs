//! The mock API harness itself: a scripted answer reaches the kube client, and a mismatch fails.
mod support;

use kube::Api;
use milo_webhook::api::Contact;
use serde_json::json;
use support::mock_api::{self, Exchange};

#[tokio::test]
async fn scripted_answers_reach_the_client() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "get then 404",
        vec![
            Exchange::get("/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contacts/a")
                .respond(json!({
                    "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
                    "metadata": {"name": "a", "namespace": "ns"},
                    "spec": {"email": "a@example.com"}
                })),
            Exchange::get("/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contacts/b")
                .not_found(),
        ],
    );
    let api: Api<Contact> = Api::namespaced(client, "ns");
    assert_eq!(api.get("a").await.unwrap().spec.email, "a@example.com");
    assert!(api.get_opt("b").await.unwrap().is_none());
    assert_eq!(script.await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_request_off_script_fails_the_scenario() {
    let (client, server) = mock_api::client();
    let script = server.run(
        "wrong path",
        vec![Exchange::get(
            "/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contacts/a",
        )],
    );
    let api: Api<Contact> = Api::namespaced(client, "ns");
    let _ = api.get("other").await;
    let failure = script.await.unwrap_err();
    let message = failure.into_panic();
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("wrong path: step 0") && text.contains("/contacts/other"),
        "{text}"
    );
}

#[test]
fn rbac_attributes_resolve_like_the_api_server() {
    use support::rbac::{Attributes, attributes};
    assert_eq!(
        attributes(
            "PATCH",
            "/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contactgroupmemberships/m/status",
            ""
        ),
        Some(Attributes {
            verb: "patch".into(),
            group: "notification.miloapis.com".into(),
            resource: "contactgroupmemberships/status".into(),
            namespace: Some("ns".into()),
            name: Some("m".into()),
        })
    );
    let list = attributes("GET", "/api/v1/namespaces", "").unwrap();
    assert_eq!(
        (list.verb.as_str(), list.resource.as_str()),
        ("list", "namespaces")
    );
    let watch = attributes("GET", "/apis/iam.miloapis.com/v1alpha1/users", "watch=true").unwrap();
    assert_eq!((watch.verb.as_str(), watch.namespace), ("watch", None));
}

#[test]
fn the_deployed_rbac_grants_what_controllers_need_and_no_more() {
    use support::rbac::denied;
    let membership =
        "/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contactgroupmemberships";
    assert_eq!(denied("POST", membership, ""), None);
    assert_eq!(denied("DELETE", &format!("{membership}/m"), ""), None);
    assert_eq!(
        denied(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/milo-system/leases",
            ""
        ),
        None
    );
    let elsewhere = denied(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/other/leases",
        "",
    );
    assert!(elsewhere.is_some_and(|why| why.contains("leases.coordination.k8s.io in other")));
    assert!(
        denied(
            "DELETE",
            "/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contacts/c",
            ""
        )
        .is_some()
    );
}

/// The pods that answer the API server's webhook calls and the internet's provider events hold
/// no power to grant access: only the invitation controller's account may bind roles, and only
/// the roles named in the manifests.
#[test]
fn only_the_invitation_account_grants_access_and_only_named_roles() {
    use support::rbac::{CONTROLLERS, INVITATIONS, denied_as};
    let rolebindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/org/rolebindings";
    let policybindings = "/apis/iam.miloapis.com/v1alpha1/namespaces/org/policybindings";
    let memberships =
        "/apis/resourcemanager.miloapis.com/v1alpha1/namespaces/org/organizationmemberships";
    let invitation_status =
        "/apis/iam.miloapis.com/v1alpha1/namespaces/org/userinvitations/i/status";
    for (method, path) in [
        ("POST", rolebindings),
        ("POST", policybindings),
        ("POST", memberships),
        ("PATCH", invitation_status),
    ] {
        assert!(
            denied_as(CONTROLLERS, method, path, "").is_some(),
            "milo-webhook may {method} {path}"
        );
        assert_eq!(
            denied_as(INVITATIONS, method, path, ""),
            None,
            "{method} {path}"
        );
    }
    // `bind` only on the roles the manifests name (what the API server checks as the binding
    // is created, on the role's name).
    let role =
        |name: &str| format!("/apis/rbac.authorization.k8s.io/v1/namespaces/org/roles/{name}");
    assert_eq!(denied_as(INVITATIONS, "bind", &role("viewer"), ""), None);
    assert!(denied_as(INVITATIONS, "bind", &role("cluster-admin"), "").is_some());
    assert!(denied_as(CONTROLLERS, "bind", &role("viewer"), "").is_some());
    // The invitation account writes nothing of the other controllers'.
    let membership =
        "/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contactgroupmemberships";
    assert!(denied_as(INVITATIONS, "POST", membership, "").is_some());
}
