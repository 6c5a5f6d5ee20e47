//! (l) Loops beside Resend through a real API server: both providers' conditions, `providers[]`
//! entries and `Ready` accepted by the API server's schema (ours and Milo's) under separate field
//! managers; one Loops call per new contact with its lists, one per change, none for unchanged
//! objects; Loops failing never stalls Resend; nobody is ever sent `subscribed: true`.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::resend::all_ready;
use super::{contact, group, membership};
use crate::harness::objects::{create, delete, eventually, get, list, merge_patch};
use crate::harness::{CrdSet, Env, EnvOptions, ServerOptions};
use crate::support::fake_loops::Fault;

const WAIT: Duration = Duration::from_secs(45);
/// Watched for calls that should not happen, across three 5 s resyncs.
const QUIET: Duration = Duration::from_secs(15);

/// Upserts and list reads Loops received.
fn loops_calls(env: &Env) -> (usize, usize) {
    let requests = env.loops().requests();
    let upserts = requests
        .iter()
        .filter(|r| r.method == Method::PUT && r.path == "/contacts/update")
        .count();
    let lists = requests
        .iter()
        .filter(|r| r.method == Method::GET && r.path == "/lists")
        .count();
    (upserts, lists)
}

/// `(name, id)` of every `status.providers` entry of `object`, sorted.
fn entries(object: &Value) -> Vec<String> {
    let mut e: Vec<String> = object["status"]["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    e.sort();
    e
}

fn condition<'o>(object: &'o Value, type_: &str) -> Option<&'o Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Both providers from the first sync to one failing and recovering.
pub async fn beside_resend(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        loops: true,
        server: ServerOptions {
            extra: vec!["--controller-resync=5s".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let env = super::start(crds, options).await;
    let c = &env.client;
    let list_id = env.loops().insert_list("News", true);
    let mut news = group("groups", "news", "public");
    news["spec"]["providers"] = json!([{"name": "Loops", "id": list_id}]);
    create(c, &news).await;
    create(c, &group("groups", "staff", "private")).await;
    for (name, email) in [
        ("ada", "ada@example.com"),
        ("bob", "bob@example.com"),
        ("cy", "cy@example.com"),
    ] {
        create(c, &contact("people", name, email)).await;
    }
    for (name, who, grp) in [
        ("ada-news", "ada", "news"),
        ("bob-news", "bob", "news"),
        ("cy-staff", "cy", "staff"),
    ] {
        create(c, &membership(name, ("people", who), ("groups", grp))).await;
    }

    // First sync: every object Ready over both providers, each mirrored where it belongs.
    all_ready(&env, "Contact", "Ready", 3).await;
    all_ready(&env, "Contact", "LoopsContactReady", 3).await;
    all_ready(&env, "Contact", "ResendContactReady", 3).await;
    all_ready(&env, "ContactGroup", "Ready", 2).await;
    all_ready(&env, "ContactGroupMembership", "Ready", 3).await;
    for contact in list(c, "Contact", Some("people")).await {
        assert_eq!(
            entries(&contact),
            ["Loops", "Resend"],
            "{}",
            contact["status"]
        );
    }
    let news = get(c, "ContactGroup", Some("groups"), "news")
        .await
        .unwrap();
    assert!(
        entries(&news).contains(&"Loops".to_owned()),
        "{}",
        news["status"]
    );
    let staff = get(c, "ContactGroup", Some("groups"), "staff")
        .await
        .unwrap();
    assert_eq!(
        condition(&staff, "LoopsContactGroupReady").unwrap()["reason"],
        "NotInLoops"
    );
    let mut members = env.loops().members(&list_id);
    members.sort();
    assert_eq!(members, ["ada@example.com", "bob@example.com"]);
    let (upserts, lists) = loops_calls(&env);
    // At most one per new contact (carrying the lists of the memberships known by then) and one
    // per membership of a listed group that was not: 3 contacts, 2 such memberships.
    assert!(
        (3..=5).contains(&upserts),
        "{upserts} upserts: {:?}",
        env.loops().requests()
    );
    assert!(lists <= 2, "{lists} list reads");

    // Settled: nothing is called for unchanged objects, while every controller sweeps again.
    let (loops_before, resend_before) =
        (env.loops().requests().len(), env.resend().requests().len());
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        env.loops().requests().len(),
        loops_before,
        "Loops calls for unchanged objects"
    );
    assert_eq!(
        env.resend().requests().len(),
        resend_before,
        "Resend calls for unchanged objects"
    );

    // An email change: one upsert, in place.
    let ada = get(c, "Contact", Some("people"), "ada").await.unwrap();
    let uid = ada["metadata"]["uid"].as_str().unwrap().to_owned();
    let loops_id = env.loops().contact_by_user_id(&uid).unwrap().id;
    merge_patch(
        c,
        "Contact",
        Some("people"),
        "ada",
        &json!({"spec": {"email": "ada@new.example"}}),
    )
    .await
    .expect("email change admitted");
    eventually("ada's new email at Loops", WAIT, || async {
        match env.loops().contact_by_user_id(&uid) {
            Some(c) if c.email == "ada@new.example" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(env.loops().contact_by_user_id(&uid).unwrap().id, loops_id);
    assert_eq!(loops_calls(&env).0, upserts + 1);

    // Loops failing: a new contact is mirrored to Resend meanwhile, its Ready False until Loops
    // recovers, and then True without Resend being called for it again.
    env.loops()
        .fail_next_matching(10_000, Method::PUT, "/contacts/update", Fault::ServerError);
    create(c, &contact("people", "dee", "dee@example.com")).await;
    eventually("dee at Resend, Loops failing", WAIT, || async {
        let dee = get(c, "Contact", Some("people"), "dee")
            .await
            .unwrap_or_default();
        let resend = condition(&dee, "ResendContactReady").is_some_and(|c| c["status"] == "True");
        let loops = condition(&dee, "LoopsContactReady").is_some_and(|c| c["status"] == "False");
        let ready = condition(&dee, "Ready").is_some_and(|c| c["status"] == "False");
        if resend && loops && ready {
            Ok(())
        } else {
            Err(dee["status"].to_string())
        }
    })
    .await;
    env.loops().clear_faults();
    all_ready(&env, "Contact", "Ready", 4).await;

    // Leaving a group takes the contact off the list before the finalizer lets go.
    delete(c, "ContactGroupMembership", Some("people"), "bob-news").await;
    eventually("bob-news gone", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "bob-news").await {
            None => Ok(()),
            Some(m) => Err(m["metadata"].to_string()),
        }
    })
    .await;
    assert_eq!(env.loops().members(&list_id), ["ada@new.example"]);
    assert!(env.loops().subscribed_true_writes().is_empty());
    env.assert_server_writes_clean();
}
