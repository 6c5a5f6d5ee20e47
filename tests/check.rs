//! `milo-webhook check`: plain manifests against a state, answered in kubectl's words.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_milo-webhook"))
        .arg("check")
        .args(["--state", "manifests/samples/state"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn sample_requests_read_like_kubectl() {
    let (code, out, err) = check(&["manifests/samples/requests/membership-ok.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "contactgroupmembership.notification.miloapis.com/user-332927065294631956-acme-billing created"
    );

    let (code, out, _) = check(&[
        "manifests/samples/requests/membership-opted-out.yaml",
        "manifests/samples/requests/membership-ok.yaml",
    ]);
    assert_eq!(code, 1, "anything rejected exits 1");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(
        "Error from server (Invalid): error when creating \"manifests/samples/requests/membership-opted-out.yaml\": \
         admission webhook \"vcontactgroupmembership.notification.miloapis.com\" denied the request: "
    ), "{}", lines[0]);
    assert!(lines[0].contains("cannot create membership as a ContactGroupMembershipRemoval user-332927149239362068-newsletter-removal already exists"));
    assert!(lines[1].ends_with("created"));
}

#[test]
fn admitted_objects_become_state_for_the_next_and_existing_ones_are_updates() {
    let dir = tempfile::tempdir().unwrap();
    let membership = |name: &str, group: &str| {
        format!(
            "apiVersion: notification.miloapis.com/v1alpha1\nkind: ContactGroupMembership\nmetadata:\n  name: {name}\n  namespace: organization-acme\n\
             spec:\n  contactRef: {{name: user-332927065294631956, namespace: milo-system}}\n  contactGroupRef: {{name: {group}, namespace: organization-acme}}\n"
        )
    };
    let twice = write(
        dir.path(),
        "twice.yaml",
        &format!(
            "{}---\n{}",
            membership("first", "acme-billing"),
            membership("second", "acme-billing")
        ),
    );
    let (code, out, _) = check(&[&twice]);
    assert_eq!(code, 1);
    assert!(
        out.contains("membership already exists in ContactGroupMembership first"),
        "{out}"
    );

    // An object that already exists in the state is sent as an UPDATE.
    let changed = write(
        dir.path(),
        "changed.yaml",
        "apiVersion: notification.miloapis.com/v1alpha1\nkind: ContactGroupMembership\nmetadata:\n  name: billing-mailbox-acme-billing\n  namespace: organization-acme\n\
         spec:\n  contactRef: {name: billing-mailbox, namespace: organization-acme}\n  contactGroupRef: {name: emailnewsletter-contact-group-3a3ar9, namespace: milo-system}\n",
    );
    let (code, out, _) = check(&[&changed]);
    assert_eq!(code, 1);
    assert!(
        out.contains("error when replacing") && out.contains("spec is immutable"),
        "{out}"
    );
}

#[test]
fn user_context_and_json_output() {
    let (code, out, err) = check(&[
        "--as",
        "ada",
        "--as-uid",
        "332926980888461588",
        "--as-user-context",
        "-o",
        "json",
        "manifests/samples/requests/membership-ok.yaml",
    ]);
    assert_eq!(code, 1, "{err}");
    let results: Value = serde_json::from_str(&out).unwrap();
    let first = &results[0];
    assert_eq!(first["allowed"], false);
    assert_eq!(first["operation"], "CREATE");
    assert_eq!(first["status"]["code"], 403);
    assert_eq!(first["status"]["reason"], "Forbidden");
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("you do not have permission to create membership for this contact")
    );
}

#[test]
fn unknown_kinds_and_missing_files_are_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pod = write(
        dir.path(),
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
    );
    let (code, out, err) = check(&[&pod]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.contains("pod.yaml: document 1: v1 Pod is not a kind milo-webhook serves")
            && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = check(&["does-not-exist.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn kinds_no_webhook_guards_are_created_and_join_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let email = "apiVersion: notification.miloapis.com/v1alpha1\nkind: Email\nmetadata:\n  name: welcome\n  namespace: milo-system\n\
                 spec:\n  templateRef: {name: welcome}\n  recipient: {emailAddress: ada@example.com}\n";
    let template = "apiVersion: notification.miloapis.com/v1alpha1\nkind: EmailTemplate\nmetadata: {name: welcome}\n\
                    spec: {subject: Hi, htmlBody: <p>Hi</p>, textBody: Hi}\n";
    let file = write(
        dir.path(),
        "email.yaml",
        &format!("{template}---\n{email}---\n{email}"),
    );
    let (code, out, err) = check(&[&file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "emailtemplate.notification.miloapis.com/welcome created",
            "email.notification.miloapis.com/welcome created",
            // The first one joined the state, so applying it again is an update.
            "email.notification.miloapis.com/welcome configured",
        ]
    );

    // A Role joins the view the rules read: the invitation naming it is admitted.
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: billing-viewer, namespace: organization-acme}\nrules: []\n";
    let invitation = "apiVersion: iam.miloapis.com/v1alpha1\nkind: UserInvitation\nmetadata: {name: grace, namespace: organization-acme}\n\
                      spec:\n  organizationRef: {name: acme}\n  email: grace@example.com\n  state: Pending\n  roles: [{name: billing-viewer}]\n";
    let without = write(dir.path(), "invitation.yaml", invitation);
    let with = write(
        dir.path(),
        "role-then-invitation.yaml",
        &format!("{role}---\n{invitation}"),
    );
    let (code, out, _) = check(&[&without]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("billing-viewer"), "{out}");
    let (code, out, err) = check(&[&with]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.trim_end()
            .ends_with("userinvitation.iam.miloapis.com/grace created"),
        "{out}"
    );
}

#[test]
fn a_file_that_is_not_a_manifest_says_what_is_wrong_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notjson.txt", "this is not json\n");
    let (code, out, err) = check(&[&text]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err.trim(),
        format!(
            "milo-webhook: {text}: document 1 is not a Kubernetes manifest: it is a string, not a mapping with apiVersion, kind and metadata"
        )
    );
    let kindless = write(
        dir.path(),
        "kindless.yaml",
        "apiVersion: notification.miloapis.com/v1alpha1\nkind: EmailTemplate\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
    );
    let (code, _, err) = check(&[&kindless]);
    assert_eq!(code, 2);
    assert!(
        err.contains("kindless.yaml: document 2 is not a Kubernetes manifest: kind is missing"),
        "{err}"
    );
    let nameless = write(
        dir.path(),
        "nameless.yaml",
        "apiVersion: notification.miloapis.com/v1alpha1\nkind: Email\nmetadata: {}\n",
    );
    let (code, _, err) = check(&[&nameless]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nameless.yaml: document 1 (notification.miloapis.com/v1alpha1 Email) has no metadata.name"),
        "{err}"
    );
}
