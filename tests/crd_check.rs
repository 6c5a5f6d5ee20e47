//! The leader's check of the installed CRDs against a cluster set up with Milo's CRDs: what it
//! reports missing (once per kind and field, and as a metric), and how status writes are shaped
//! to what the cluster declares.

mod support;

use milo_webhook::controllers::schemas::{InstalledSchemas, StatusWrite};
use milo_webhook::metrics::CrdFieldLabels;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use support::milo_crds;

fn exported(gauge: &Family<CrdFieldLabels, Gauge>) -> Vec<String> {
    let mut registry = Registry::default();
    registry.register("crd_missing_fields", "test", gauge.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("crd_missing_fields{"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn on_milo_crds_the_missing_fields_are_named_and_writes_shaped() {
    let schemas = InstalledSchemas::unchecked();
    let gauge = Family::<CrdFieldLabels, Gauge>::default();
    schemas.compare(&milo_webhook::crds::all(), &milo_crds::as_read(), &gauge);
    let missing: Vec<String> = exported(&gauge)
        .iter()
        .filter(|l| l.ends_with(" 1"))
        .map(|l| l.trim_start_matches("crd_missing_fields").to_owned())
        .collect();
    for wanted in [
        r#"{kind="ContactGroupEnrollmentPolicy",field="status"} 1"#,
        r#"{kind="ContactGroupEnrollmentPolicy",field="spec.backfill"} 1"#,
        r#"{kind="EmailBroadcast",field="status.pendingBatch"} 1"#,
        r#"{kind="EmailBroadcast",field="status.sentThrough"} 1"#,
        r#"{kind="UserInvitation",field="status.acceptedAt"} 1"#,
    ] {
        assert!(
            missing.iter().any(|m| m == wanted),
            "{wanted} not in {missing:#?}"
        );
    }
    // Nothing of Milo's own is reported: ours is a superset of it.
    assert!(
        missing.iter().all(|m| !m.contains("providerID")),
        "{missing:#?}"
    );

    // No status subresource: the policy's status is not written at all.
    let mut body = json!({"status": {"contactsEnrolled": 1}});
    assert_eq!(
        schemas.prepare_status("ContactGroupEnrollmentPolicy", &mut body),
        StatusWrite::Skip
    );
    // The broadcast's bookkeeping is left out; what Milo declares goes.
    let mut body = json!({"apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "EmailBroadcast", "status": {"providerID": "x", "sentThrough": "a/b",
        "conditions": [{"type": "Ready", "status": "False", "reason": "R", "message": "m",
            "lastTransitionTime": "2026-12-07T00:00:00Z"}]}});
    assert_eq!(
        schemas.prepare_status("EmailBroadcast", &mut body),
        StatusWrite::Send
    );
    assert!(body["status"].get("sentThrough").is_none(), "{body}");
    assert_eq!(body["status"]["providerID"], "x");
    assert_eq!(body["status"]["conditions"][0]["reason"], "R");
    // A membership's provider id is Milo's field too: it goes.
    let mut body =
        json!({"status": {"providerID": "seg", "providers": [{"name": "Resend", "id": "seg"}]}});
    assert_eq!(
        schemas.prepare_status("ContactGroupMembership", &mut body),
        StatusWrite::Send
    );
    assert_eq!(body["status"]["providerID"], "seg");
    assert_eq!(
        schemas.missing(
            "EmailBroadcast",
            &["status.pendingBatch", "status.conditions"]
        ),
        ["status.pendingBatch"]
    );
}

#[test]
fn once_our_crds_are_applied_nothing_is_missing_and_the_gauge_reads_zero() {
    let schemas = InstalledSchemas::unchecked();
    let gauge = Family::<CrdFieldLabels, Gauge>::default();
    schemas.compare(&milo_webhook::crds::all(), &milo_crds::as_read(), &gauge);
    assert!(exported(&gauge).iter().any(|l| l.ends_with(" 1")));
    // The operator applies our CRDs; the next check sees them.
    let ours: Vec<_> = milo_webhook::crds::all()
        .into_iter()
        .map(|crd| (crd.metadata.name.clone().unwrap_or_default(), Some(crd)))
        .collect();
    schemas.compare(&milo_webhook::crds::all(), &ours, &gauge);
    let lines = exported(&gauge);
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l.ends_with(" 0")), "{lines:#?}");
    assert!(
        schemas
            .missing("EmailBroadcast", &["status.pendingBatch"])
            .is_empty()
    );
    let mut body = json!({"status": {"contactsEnrolled": 1}});
    assert_eq!(
        schemas.prepare_status("ContactGroupEnrollmentPolicy", &mut body),
        StatusWrite::Send
    );
    assert_eq!(body["status"]["contactsEnrolled"], 1);
}
