//! (j) An EmailBroadcast to a group through a real API server, and (k) the one-click unsubscribe
//! link in the mail it sent, followed the way a mail client follows it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::audit;
use crate::harness::objects::{condition_true, create, eventually, get, list};
use crate::harness::{CrdSet, Env, EnvOptions, SERVER_USER};

use super::{contact, group, membership, removal, start};

const WAIT: Duration = Duration::from_secs(45);

fn template() -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
        "metadata": {"name": "news"}, "spec": {
            "subject": "News for {{.GivenName}}",
            "htmlBody": "<p>Hi {{.GivenName}}</p><a href=\"{{.UnsubscribeLink}}\">out</a>",
            "textBody": "Hi {{.GivenName}} {{.UnsubscribeLink}}",
            "variables": [{"name": "GivenName", "required": false, "type": "string"},
                          {"name": "UnsubscribeLink", "required": false, "type": "string"}]}})
}

fn per_address(env: &Env) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for mail in env.resend().sent_emails() {
        *counts.entry(mail.to()).or_default() += 1;
    }
    counts
}

async fn removals_of(env: &Env, contact: &str) -> Vec<Value> {
    list(&env.client, "ContactGroupMembershipRemoval", Some("people"))
        .await
        .into_iter()
        .filter(|r| r["spec"]["contactRef"]["name"] == contact)
        .collect()
}

/// A broadcast mails each member of the group once, skipping the member who opted out, and
/// reports Ready; the one-click link in a mail (`List-Unsubscribe`, RFC 8058) removes that
/// person from that group, once, however often it is followed; a GET changes nothing.
pub async fn broadcast_and_one_click(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        ..Default::default()
    };
    let env = start(crds, options).await;
    let c = &env.client;
    create(c, &template()).await;
    create(c, &group("groups", "news", "public")).await;
    for i in 0..3 {
        let name = format!("c{i}");
        create(c, &contact("people", &name, &format!("p{i}@example.com"))).await;
        create(
            c,
            &membership(&format!("m{i}"), ("people", &name), ("groups", "news")),
        )
        .await;
    }
    create(c, &removal("c2-out", ("people", "c2"), ("groups", "news"))).await;
    eventually("c2's membership deleted", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "m2").await {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    create(
        c,
        &json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailBroadcast",
            "metadata": {"namespace": "groups", "name": "b1"},
            "spec": {"contactGroupRef": {"namespace": "groups", "name": "news"},
                     "templateRef": {"name": "news"}}}),
    )
    .await;
    if crds == CrdSet::Milo {
        return milo_crd_refuses_to_send(&env).await;
    }
    let broadcast = eventually("the broadcast Ready", WAIT, || async {
        let b = get(c, "EmailBroadcast", Some("groups"), "b1")
            .await
            .unwrap();
        if condition_true(&b, "Ready") {
            Ok(b)
        } else {
            Err(b["status"].to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = per_address(&env);
    assert_eq!(
        sent,
        BTreeMap::from([
            ("p0@example.com".to_owned(), 1),
            ("p1@example.com".to_owned(), 1)
        ]),
        "one mail per member, none for the one who opted out"
    );
    if crds == CrdSet::Ours {
        assert_eq!(
            broadcast["status"]["recipientsSent"], 2,
            "{}",
            broadcast["status"]
        );
        let missing = env.crd_missing_fields().await;
        assert!(
            missing.is_empty(),
            "our CRDs declare everything: {missing:?}"
        );
    }

    // The link in p0's mail, as a mail client follows it.
    let mail = env
        .resend()
        .sent_emails()
        .into_iter()
        .find(|m| m.to() == "p0@example.com")
        .expect("p0's mail");
    assert_eq!(
        mail.payload["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    let header = mail.payload["headers"]["List-Unsubscribe"]
        .as_str()
        .expect("a List-Unsubscribe header");
    let url = header
        .strip_prefix('<')
        .and_then(|h| h.strip_suffix('>'))
        .expect("<url>");
    assert!(
        url.starts_with(&format!("{}/unsubscribe/", env.servers[0].events_url())),
        "{url}"
    );
    let http = reqwest::Client::new();
    let page = http.get(url).send().await.expect("GET the link");
    assert_eq!(page.status(), 200);
    assert!(
        removals_of(&env, "c0").await.is_empty(),
        "a GET changed something"
    );
    for _ in 0..2 {
        let answer = http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("POST the link");
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    eventually("p0 removed from news", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "m0").await {
            None => Ok(()),
            Some(_) => Err("m0 still there".to_owned()),
        }
    })
    .await;
    let removals = removals_of(&env, "c0").await;
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals[0]["spec"]["contactGroupRef"]["name"], "news");
    assert!(
        get(c, "ContactGroupMembership", Some("people"), "m1")
            .await
            .is_some(),
        "another member is untouched"
    );
    assert_eq!(per_address(&env).values().sum::<usize>(), 2, "no more mail");
    env.assert_server_writes_clean();
}

/// Milo's EmailBroadcast CRD has no room for the progress that keeps a broadcast from being sent
/// twice after a restart: the sender sends nothing, says why once in Ready, and does not retry.
async fn milo_crd_refuses_to_send(env: &Env) {
    let c = &env.client;
    let status = eventually("Ready False, CRDFieldsMissing", WAIT, || async {
        let b = get(c, "EmailBroadcast", Some("groups"), "b1")
            .await
            .unwrap();
        let ready = b["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        match ready {
            Some(r) if r["status"] == "False" && r["reason"] == "CRDFieldsMissing" => Ok(r),
            _ => Err(b["status"].to_string()),
        }
    })
    .await;
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("pendingBatch")),
        "{status}"
    );
    let missing = env.crd_missing_fields().await;
    assert!(
        missing.contains(&(
            "EmailBroadcast".to_owned(),
            "status.pendingBatch".to_owned()
        )),
        "the gap is exported: {missing:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.resend().sent_emails().is_empty(),
        "mail sent without the bookkeeping that prevents doubles"
    );
    let writes = audit::count(
        &env.plane.audit_log,
        SERVER_USER,
        "patch",
        "emailbroadcasts/status",
    );
    assert_eq!(writes, 1, "Ready written once, not on every reconcile");
    env.assert_server_writes_clean();
}
