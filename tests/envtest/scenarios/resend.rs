//! (g) Provider sync through a real API server: contacts, groups and memberships mirrored to the
//! fake Resend, each reported Ready on its status (which the API server must accept: its schema
//! is the CRD's), within a per-object call budget, and silent once settled.

use std::time::Duration;

use serde_json::Value;

use crate::harness::objects::{condition_true, create, eventually, get, list};
use crate::harness::{CrdSet, Env, EnvOptions, ServerOptions};
use crate::support::fake_resend::{RequestRecord, calls};

use super::{contact, group, membership};

const WAIT: Duration = Duration::from_secs(45);
/// `--controller-resync` of the sync scenario: every controller sweeps (and the leader reads the
/// installed CRDs again) this often.
const RESYNC: Duration = Duration::from_secs(5);
/// How long a settled cluster is watched for provider calls that should not happen.
const QUIET: Duration = Duration::from_secs(60);
const CONTACT_READY: &str = "ResendContactReady";
const GROUP_READY: &str = "ResendContactGroupReady";
const MEMBERSHIP_READY: &str = "ResendContactGroupMembershipReady";

/// Waits until every object of `kind` has `condition` True for its generation.
pub async fn all_ready(env: &Env, kind: &str, condition: &str, expected: usize) {
    eventually(&format!("every {kind} {condition}"), WAIT, || async {
        let objects = list(&env.client, kind, None).await;
        let not_ready: Vec<String> = objects
            .iter()
            .filter(|o| !condition_true(o, condition))
            .map(|o| format!("{}: {}", o["metadata"]["name"], o["status"]))
            .collect();
        if objects.len() == expected && not_ready.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {expected}, not ready: {not_ready:?}",
                objects.len()
            ))
        }
    })
    .await;
}

fn decoded(path: &str) -> String {
    path.replace("%40", "@").replace("%2B", "+")
}

/// Calls about one contact: its look-ups, create and updates (by email or by id), not its
/// memberships.
fn contact_calls(requests: &[RequestRecord], email: &str, id: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|r| {
            let path = decoded(&r.path);
            let about = path.contains(email)
                || path.contains(id)
                || (path.starts_with("/contacts") && r.body.contains(email));
            about && !path.contains("/segments")
        })
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// Calls adding or removing one contact to or from a segment.
fn membership_calls(requests: &[RequestRecord], email: &str, id: &str, segment: &str) -> usize {
    requests
        .iter()
        .filter(|r| {
            let path = decoded(&r.path);
            path.starts_with("/contacts/")
                && path.ends_with(&format!("/segments/{segment}"))
                && (path.contains(email) || path.contains(id))
        })
        .count()
}

fn segment_of(group: &Value) -> String {
    group["status"]["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "Resend"))
        .and_then(|p| p["id"].as_str())
        .unwrap_or_else(|| panic!("no Resend segment id on {}", group["status"]))
        .to_owned()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Contacts, groups and memberships become Ready and mirrored: one listing of the account's
/// contacts, at most 1 call per new contact (its create, which carries the segments of the
/// memberships known by then), at most 1 per membership (none when it rode on the create), none
/// for objects that do not change (over a minute of 5 s resyncs).
pub async fn sync(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        server: ServerOptions {
            extra: vec![format!("--controller-resync={}s", RESYNC.as_secs())],
            ..Default::default()
        },
        ..Default::default()
    };
    let env = Env::start(crds, options).await;
    let c = &env.client;
    let fake = env.resend();
    env.namespace("people").await;
    env.namespace("groups").await;
    create(c, &group("groups", "news", "public")).await;
    create(c, &group("groups", "staff", "private")).await;
    let people = [
        ("ada", "ada@example.com"),
        ("bob", "bob@example.com"),
        ("cy", "cy@example.com"),
    ];
    for (name, email) in people {
        create(c, &contact("people", name, email)).await;
    }
    for (name, who, grp) in [
        ("ada-news", "ada", "news"),
        ("bob-news", "bob", "news"),
        ("cy-staff", "cy", "staff"),
    ] {
        create(c, &membership(name, ("people", who), ("groups", grp))).await;
    }
    all_ready(&env, "Contact", CONTACT_READY, 3).await;
    all_ready(&env, "ContactGroup", GROUP_READY, 2).await;
    all_ready(&env, "ContactGroupMembership", MEMBERSHIP_READY, 3).await;

    let requests = fake.requests();
    let news = segment_of(
        &get(c, "ContactGroup", Some("groups"), "news")
            .await
            .unwrap(),
    );
    let staff = segment_of(
        &get(c, "ContactGroup", Some("groups"), "staff")
            .await
            .unwrap(),
    );
    assert_eq!(
        sorted(fake.members(&news)),
        ["ada@example.com", "bob@example.com"]
    );
    assert_eq!(fake.members(&staff), ["cy@example.com"]);
    assert_eq!(fake.contacts().len(), 3);
    assert_eq!(fake.segments().len(), 2);
    // A group costs one listing (shared by the groups synced together) and one create.
    let segment_calls: Vec<String> = requests
        .iter()
        .filter(|r| r.path.starts_with("/segments"))
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect();
    let creates = segment_calls
        .iter()
        .filter(|c| c.starts_with("POST"))
        .count();
    assert_eq!(creates, 2, "{segment_calls:?}");
    assert!(segment_calls.len() <= 4, "{segment_calls:?}");
    // No look-up per contact: one listing of the account serves them all.
    let listings = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/contacts?"))
        .count();
    assert_eq!(listings, 1, "{:?}", calls(&requests));
    for (_, email) in people {
        let id = fake.contact(email).expect("mirrored").id;
        let calls = contact_calls(&requests, email, &id);
        assert!(calls.len() <= 1, "{email}: {calls:?}");
    }
    for (who, segment) in [("ada", &news), ("bob", &news), ("cy", &staff)] {
        let email = format!("{who}@example.com");
        let id = fake.contact(&email).unwrap().id;
        assert!(
            membership_calls(&requests, &email, &id, segment) <= 1,
            "{who}'s membership: {:?}",
            calls(&requests)
        );
    }

    // Settled: nothing changes, nothing is called for a minute, also while every controller
    // sweeps its objects again (twelve resyncs: what a minute of the default would never show).
    let before = fake.requests().len();
    tokio::time::sleep(QUIET).await;
    let after = fake.requests();
    assert_eq!(
        after.len(),
        before,
        "calls for unchanged objects: {:?}",
        after[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );

    // The leader read the installed CRDs at start and at every resync since: what Milo's lack is
    // said once per kind and field, and ours lack nothing.
    let log = env.servers[0]
        .process
        .as_ref()
        .expect("running")
        .log
        .clone();
    let log = std::fs::read_to_string(log).expect("the server's log");
    let said = |field: &str| {
        log.lines()
            .filter(|l| l.contains("does not declare") && l.contains(&format!("field={field}")))
            .count()
    };
    match crds {
        CrdSet::Milo => {
            assert_eq!(said("status.pendingBatch"), 1, "{log}");
            assert_eq!(said("status.acceptedAt"), 1, "{log}");
        }
        CrdSet::Ours => assert!(!log.contains("does not declare"), "{log}"),
    }

    // One more membership costs one call.
    create(
        c,
        &membership("bob-staff", ("people", "bob"), ("groups", "staff")),
    )
    .await;
    all_ready(&env, "ContactGroupMembership", MEMBERSHIP_READY, 4).await;
    let id = fake.contact("bob@example.com").unwrap().id;
    assert_eq!(
        membership_calls(&fake.requests(), "bob@example.com", &id, &staff),
        1,
        "a membership added to a settled cluster: {:?}",
        fake.requests()[after.len()..]
            .iter()
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sorted(fake.members(&staff)),
        ["bob@example.com", "cy@example.com"]
    );

    // A deleted membership leaves the segment before its finalizer lets it go.
    crate::harness::objects::delete(c, "ContactGroupMembership", Some("people"), "bob-news").await;
    eventually("bob-news gone", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "bob-news").await {
            None => Ok(()),
            Some(m) => Err(m["metadata"].to_string()),
        }
    })
    .await;
    assert_eq!(fake.members(&news), ["ada@example.com"]);
    env.assert_server_writes_clean();
}

/// Deleting a namespace (the controller manager's namespace controller deletes its objects) waits
/// for the sync's finalizers, which are released once the Resend side is cleaned up: the
/// namespace goes, and so do its contacts and segments at Resend.
pub async fn namespace_deletion(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        controller_manager: true,
        ..Default::default()
    };
    let env = Env::start(crds, options).await;
    let c = &env.client;
    let fake = env.resend();
    env.namespace("team").await;
    create(c, &group("team", "news", "public")).await;
    create(c, &contact("team", "ada", "ada@example.com")).await;
    create(
        c,
        &membership("ada-news", ("team", "ada"), ("team", "news")),
    )
    .await;
    all_ready(&env, "ContactGroupMembership", MEMBERSHIP_READY, 1).await;
    assert_eq!((fake.contacts().len(), fake.segments().len()), (1, 1));

    crate::harness::objects::delete(c, "Namespace", None, "team").await;
    eventually("the namespace gone", Duration::from_secs(90), || async {
        match get(c, "Namespace", None, "team").await {
            None => Ok(()),
            Some(ns) => Err(ns["status"].to_string()),
        }
    })
    .await;
    assert!(fake.contacts().is_empty(), "{:?}", fake.contacts());
    assert!(fake.segments().is_empty(), "{:?}", fake.segments());
    env.assert_server_writes_clean();
}
