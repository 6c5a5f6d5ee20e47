//! The checked-in manifests agree with the binary: the webhook configurations are what
//! `webhook-config` renders, and the sample state and reviews decide the way the README says.

use std::path::Path;
use std::process::Command;

use milo_webhook::admission::WEBHOOKS;
use milo_webhook::view::Store;
use milo_webhook::view::manifests::load_paths;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn milo_webhook(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_milo-webhook"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn checked_in_webhook_configurations_match_the_registry() {
    let (code, rendered, stderr) = milo_webhook(&[
        "webhook-config",
        "--service",
        "milo-webhook",
        "--namespace",
        "milo-system",
        "--inject-ca-from",
        "milo-system/milo-webhook-tls",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let on_disk =
        std::fs::read_to_string(root().join("manifests/webhook/webhook-configurations.yaml"))
            .unwrap();
    assert_eq!(
        on_disk, rendered,
        "regenerate manifests/webhook/ (see docs/development.md)"
    );
}

#[test]
fn url_rendering_covers_every_webhook_with_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let chain = milo_webhook::server::tls::generate_dev_chain(&["localhost"]).unwrap();
    std::fs::write(&ca, &chain.ca_cert_pem).unwrap();
    let (code, yaml, stderr) = milo_webhook(&[
        "webhook-config",
        "--url",
        "https://127.0.0.1:9443",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(docs[0]["kind"], "ValidatingWebhookConfiguration");
    assert_eq!(docs[1]["kind"], "MutatingWebhookConfiguration");
    let hooks: Vec<&Value> = docs
        .iter()
        .flat_map(|d| d["webhooks"].as_array().unwrap())
        .collect();
    assert_eq!(hooks.len(), WEBHOOKS.len());
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&chain.ca_cert_pem);
    for webhook in WEBHOOKS {
        let hook = hooks
            .iter()
            .find(|h| h["name"] == webhook.name)
            .unwrap_or_else(|| panic!("{} is registered", webhook.name));
        assert_eq!(
            hook["clientConfig"]["url"],
            format!("https://127.0.0.1:9443{}", webhook.path)
        );
        assert_eq!(hook["clientConfig"]["caBundle"], bundle.as_str());
        assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["timeoutSeconds"], 10);
        assert_eq!(hook["rules"][0]["resources"][0], webhook.resource);
    }
    let (code, _, stderr) = milo_webhook(&["webhook-config", "--url", "http://insecure"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("https://"), "{stderr}");
    let (code, _, stderr) = milo_webhook(&[
        "webhook-config",
        "--url",
        "https://x",
        "--ca-file",
        "Cargo.toml",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
}

#[test]
fn sample_state_loads_and_is_consistent() {
    let mut store = Store::default();
    let report = load_paths(&mut store, &[root().join("manifests/samples/state")]).unwrap();
    assert_eq!(report.stored.get("Contact"), Some(&4));
    assert_eq!(report.stored.get("ContactGroupMembershipRemoval"), Some(&1));
    assert_eq!(
        report.stored.get("User"),
        Some(&3),
        "the kind: List file is read"
    );
    assert!(report.skipped.contains_key("v1/Namespace"), "{report:?}");
}

#[test]
fn sample_reviews_decide_as_documented() {
    for (file, allowed, fragment) in [
        ("membership-create-allowed.json", true, ""),
        (
            "membership-create-opted-out.json",
            false,
            "cannot create membership as a ContactGroupMembershipRemoval",
        ),
        (
            "removal-create-private.json",
            false,
            "ContactGroup must be public for creating a ContactGroupMembershipRemoval",
        ),
    ] {
        let review = format!("manifests/samples/reviews/{file}");
        let (code, out, stderr) =
            milo_webhook(&["review", "--state", "manifests/samples/state", &review]);
        assert_eq!(code, 0, "{file}: {stderr}");
        let reply: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reply["response"]["allowed"], allowed, "{file}: {out}");
        let message = reply["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(fragment), "{file}: {message}");
    }
}

/// Every `--flag` the deploy base and its overlays pass to `serve` is one `serve` knows: a
/// misspelt flag would stop the pod at start, where no test of the binary alone would see it.
#[test]
fn every_flag_the_manifests_pass_is_one_serve_knows() {
    let (code, help, err) = milo_webhook(&["serve", "--help"]);
    assert_eq!(code, 0, "{err}");
    let mut checked = 0;
    for dir in ["deploy", "provider-events", "loops"] {
        let dir = root().join("manifests").join(dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let line = line.trim_start();
                let Some(arg) = line
                    .strip_prefix("- --")
                    .or_else(|| line.strip_prefix("value: --"))
                else {
                    continue;
                };
                let flag = arg.split('=').next().unwrap();
                assert!(
                    help.contains(&format!("--{flag}")),
                    "{}: serve has no --{flag}",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} flags found");
}
