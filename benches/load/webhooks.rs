//! Every webhook at a fixed rate: one review of each kind in turn (contact mutating and validating,
//! group, membership, removal, policy, invitation mutating and validating), each webhook's own
//! review duration read from the server's histogram on the admin port afterwards.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{
    CASES, Case, Options, RATE_CONNECTIONS, Server, connect_all, connector, fixed_rate, objects,
};
use tokio::net::TcpStream;

/// `(path, short name)` of every webhook, as the report names them.
pub const WEBHOOKS: [(&str, &str); 8] = [
    (
        "/mutate-notification-miloapis-com-v1alpha1-contact",
        "contact (mutating)",
    ),
    (
        "/validate-notification-miloapis-com-v1alpha1-contact",
        "contact (validating)",
    ),
    (
        "/validate-notification-miloapis-com-v1alpha1-contactgroup",
        "group",
    ),
    (
        "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership",
        "membership",
    ),
    (
        "/validate-notification-miloapis-com-v1alpha1-contactgroupmembershipremoval",
        "removal",
    ),
    (
        "/validate-notification-miloapis-com-v1alpha1-contactgroupenrollmentpolicy",
        "policy",
    ),
    (
        "/mutate-iam-miloapis-com-v1alpha1-userinvitation",
        "invitation (mutating)",
    ),
    (
        "/validate-iam-miloapis-com-v1alpha1-userinvitation",
        "invitation (validating)",
    ),
];

const NOTIFICATION: &str = "notification.miloapis.com";
const IAM: &str = "iam.miloapis.com";

/// Users `user-0..n/2` (the subjects of the state's contacts) and `free-0..1000` (referenced by
/// no contact), as state lines.
pub fn users(n: usize) -> impl Iterator<Item = String> {
    let named = (0..n / 2).map(|i| format!("user-{i}"));
    named.chain((0..1000).map(|i| format!("free-{i}"))).map(|name| {
        format!(
            r#"{{"apiVersion":"{IAM}/v1alpha1","kind":"User","metadata":{{"name":"{name}","uid":"{name}-uid"}},"spec":{{"email":"{name}@users.example.com"}}}}"#
        )
    })
}

fn review(k: usize, plural: &str, group: &str, object: Value, user: Value) -> Value {
    let kind = object["kind"].clone();
    let version = "v1alpha1";
    let uid = format!("hook-{k}");
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": plural},
        "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
        "operation": "CREATE", "dryRun": false, "userInfo": user, "object": object}})
}

/// The `k`th review for the webhook at `WEBHOOKS[w]`, against a state of `n` objects.
pub fn case(w: usize, k: usize, n: usize) -> (Bytes, String) {
    let admin = json!({"username": "admin", "uid": "admin-uid", "groups": ["system:masters", "system:authenticated"]});
    let ns = super::NS;
    let (j, g) = (k % (n / 2), k % super::GROUPS);
    let api = format!("{NOTIFICATION}/v1alpha1");
    let meta = json!({"name": format!("new-{k}"), "namespace": ns});
    let contact = |user: String| {
        json!({"apiVersion": api, "kind": "Contact", "metadata": meta,
            "spec": {"email": format!("new-{k}@example.com"),
                     "subject": {"apiGroup": IAM, "kind": "User", "name": user}}})
    };
    let pair = |kind: &str| {
        json!({"apiVersion": api, "kind": kind, "metadata": meta,
            "spec": {"contactRef": {"name": format!("contact-{j}"), "namespace": ns},
                     "contactGroupRef": {"name": format!("group-{g}"), "namespace": ns}}})
    };
    let invitation = json!({"apiVersion": format!("{IAM}/v1alpha1"), "kind": "UserInvitation",
        "metadata": {"name": format!("invite-{k}"), "namespace": "organization-acme"},
        "spec": {"organizationRef": {"name": "acme"}, "email": format!("invitee-{k}@example.com"),
                 "roles": [{"name": "org-viewer"}], "state": "Pending",
                 "expirationDate": "2099-12-01T00:00:00Z"}});
    let value = match w {
        0 => review(
            k,
            "contacts",
            NOTIFICATION,
            contact(format!("user-{j}")),
            admin,
        ),
        1 => review(
            k,
            "contacts",
            NOTIFICATION,
            contact(format!("free-{}", k % 1000)),
            admin,
        ),
        2 => {
            let group = json!({"apiVersion": api, "kind": "ContactGroup", "metadata": meta,
                "spec": {"displayName": format!("New group {k}"), "visibility": "public"}});
            review(k, "contactgroups", NOTIFICATION, group, admin)
        }
        3 => review(
            k,
            "contactgroupmemberships",
            NOTIFICATION,
            pair("ContactGroupMembership"),
            admin,
        ),
        4 => review(
            k,
            "contactgroupmembershipremovals",
            NOTIFICATION,
            pair("ContactGroupMembershipRemoval"),
            admin,
        ),
        5 => {
            let policy = json!({"apiVersion": api, "kind": "ContactGroupEnrollmentPolicy", "metadata": meta,
                "spec": {"contactGroupRef": {"name": format!("group-{g}"), "namespace": ns},
                         "trigger": {"type": "ContactCreated"}, "backfill": false,
                         "contactSelector": {"subjectKind": "User"}}});
            review(
                k,
                "contactgroupenrollmentpolicies",
                NOTIFICATION,
                policy,
                admin,
            )
        }
        6 | 7 => {
            let inviter = json!({"username": "user-0@users.example.com", "uid": "user-0",
                "groups": ["system:authenticated"]});
            review(k, "userinvitations", IAM, invitation, inviter)
        }
        _ => unreachable!("eight webhooks"),
    };
    let uid = format!("hook-{k}");
    (serde_json::to_vec(&value).unwrap_or_default().into(), uid)
}

/// The admin port's `/metrics` text.
pub async fn scrape(admin: SocketAddr) -> Result<String> {
    let stream = TcpStream::connect(admin).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get("/metrics").header("host", "localhost");
    let response = sender
        .send_request(request.body(Full::<Bytes>::default())?)
        .await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `(count, reviews at or under 0.2 ms, bound in ms the p99 is at or under)` for one webhook,
/// from the cumulative buckets of `milo_webhook_admission_review_duration_seconds`.
pub fn quantiles(metrics: &str, path: &str) -> Result<(u64, u64, f64)> {
    let prefix = "milo_webhook_admission_review_duration_seconds_bucket{";
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(prefix)) {
        if !line.contains(&format!("webhook=\"{path}\"")) {
            continue;
        }
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let count = line.rsplit(' ').next().and_then(|c| c.parse::<u64>().ok());
        let (le, count) = (
            le.context("bucket without le")?,
            count.context("bucket count")?,
        );
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, count));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    let within = buckets
        .iter()
        .find(|b| (b.0 - 0.0002).abs() < 1e-12)
        .map_or(0, |b| b.1);
    let p99 = buckets
        .iter()
        .find(|b| b.1 as f64 >= 0.99 * total as f64)
        .map_or(f64::NAN, |b| b.0 * 1e3);
    Ok((total, within, p99))
}

/// Every webhook at `--rate` for `--seconds` against `n` objects and their users; prints each
/// webhook's review duration from the server's histogram. Returns the failure count.
pub async fn per_webhook(dir: &Path, n: usize, o: &Options) -> Result<usize> {
    let state = dir.join("state-webhooks.json");
    let mut w = BufWriter::new(File::create(&state)?);
    for object in objects(n).chain(users(n)) {
        writeln!(w, "{object}")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let server = Server::start(dir, &state).await?;
    let count = WEBHOOKS.len();
    let cases: Vec<Case> = (0..CASES * count)
        .map(|i| {
            let (body, uid) = case(i % count, i, n);
            let path = WEBHOOKS[i % count].0;
            Case {
                path,
                body,
                uid,
                allowed: None,
            }
        })
        .collect();
    let tls = connector(&server.ca_pem)?;
    let senders = connect_all(server.addr, &tls, RATE_CONNECTIONS).await?;
    // `drive` walks the cases 7 apart; with eight webhooks that still visits every one in turn.
    let (mut tally, rate) = fixed_rate(senders, &Arc::new(cases), o).await?;
    let metrics = scrape(server.admin).await?;
    server.stop().await?;
    std::fs::remove_file(&state)?;
    let (_, p99, _) = tally.percentiles();
    println!(
        "\nevery webhook at {rate:.0} reviews/s in turn (N={n}; client p99 {p99:.3} ms); the server's own review duration:"
    );
    println!("webhook                    reviews  <=0.2ms   p99_ms (bucket bound)  p99 < 0.2 ms");
    for (path, name) in WEBHOOKS {
        let (total, within, p99) = quantiles(&metrics, path)?;
        let share = within as f64 / (total.max(1)) as f64;
        let met = if share >= 0.99 { "met" } else { "MISSED" };
        println!(
            "{name:<26} {total:>7} {:>7.2}%  <= {p99:<8}             {met}",
            share * 100.0
        );
    }
    Ok(tally.report("every webhook"))
}
