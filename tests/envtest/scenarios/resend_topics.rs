//! (t) Resend topics on a real API server: a public group's topic made once, a person leaving it
//! on Resend's preference page (a signed `contact.updated`, the topic read back) becoming the
//! pair's removal with its source, time and event, the removal controller deleting the
//! membership and the sync taking it out of the segment without writing the topic again; the
//! private group is kept. With our CRDs and Milo's: nothing is written that either refuses.

use std::time::Duration;

use milo_webhook::controllers::consent::{EVENT_ANNOTATION, SOURCE_ANNOTATION, TIME_ANNOTATION};
use milo_webhook::controllers::resend::topics::{key_of, topic_key};
use milo_webhook::server::provider_events::CONTACT_EVENTS_PATH;
use serde_json::json;

use crate::harness::objects::{condition_true, create, eventually, get, list};
use crate::harness::{CrdSet, EnvOptions};

use super::operations::deliver;
use super::{contact, group, membership, start};

const WAIT: Duration = Duration::from_secs(45);

pub async fn topic_opt_out(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        ..Default::default()
    };
    let env = start(crds, options).await;
    let c = &env.client;
    let fake = env.resend();
    create(c, &group("groups", "news", "public")).await;
    create(c, &group("groups", "staff", "private")).await;
    create(c, &contact("people", "ada", "ada@example.com")).await;
    create(
        c,
        &membership("ada-news", ("people", "ada"), ("groups", "news")),
    )
    .await;
    create(
        c,
        &membership("ada-staff", ("people", "ada"), ("groups", "staff")),
    )
    .await;
    eventually("ada's memberships mirrored", WAIT, || async {
        let ms = list(c, "ContactGroupMembership", Some("people")).await;
        let ready = ms
            .iter()
            .filter(|m| condition_true(m, "ResendContactGroupMembershipReady"))
            .count();
        if ready == 2 {
            Ok(())
        } else {
            Err(format!("{ms:?}"))
        }
    })
    .await;
    let key = topic_key("groups", "news");
    let topics = fake.topics();
    assert_eq!(
        topics.len(),
        1,
        "one topic, for the public group: {topics:?}"
    );
    assert_eq!(key_of(&topics[0].name), Some(key.as_str()));
    assert_eq!(
        (
            topics[0].default_subscription.as_str(),
            topics[0].visibility.as_str()
        ),
        ("opt_in", "public")
    );
    let topic = topics[0].id.clone();

    // Ada leaves news on Resend's preference page; Resend reports the contact updated.
    fake.choose_topic("ada@example.com", &topic, "opt_out");
    let id = fake.contact("ada@example.com").expect("mirrored").id;
    let event = json!({"type": "contact.updated", "created_at": "2026-12-07T12:00:00.000Z",
        "data": {"id": id, "email": "ada@example.com", "first_name": "ada",
                 "segment_ids": [], "audience_id": "a-1"}});
    let url = format!("{}{CONTACT_EVENTS_PATH}", env.servers[0].events_url());
    assert_eq!(deliver(&url, "msg_topic_1", &event).await, 200);
    let removal = eventually("a removal from news", WAIT, || async {
        match list(c, "ContactGroupMembershipRemoval", None)
            .await
            .as_slice()
        {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        removal["spec"]["contactGroupRef"],
        json!({"namespace": "groups", "name": "news"})
    );
    let annotations = &removal["metadata"]["annotations"];
    assert_eq!(annotations[SOURCE_ANNOTATION], "resend-topic");
    assert_eq!(annotations[EVENT_ANNOTATION], "msg_topic_1");
    assert_eq!(annotations[TIME_ANNOTATION], "2026-12-07T12:00:00Z");
    eventually("ada's news membership deleted", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "ada-news").await {
            None => Ok(()),
            Some(m) => Err(m["metadata"].to_string()),
        }
    })
    .await;
    assert!(
        get(c, "ContactGroupMembership", Some("people"), "ada-staff")
            .await
            .is_some(),
        "a private group's membership is kept"
    );
    // Out of the segment; the topic keeps the person's own choice, never written again.
    let segments = fake.segments();
    let news = segments.iter().find(|s| s.name.starts_with("groups/news-"));
    assert!(fake.members(&news.expect("news' segment").id).is_empty());
    assert_eq!(
        fake.subscription("ada@example.com", &topic).as_deref(),
        Some("opt_out")
    );
    let patches = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/topics"))
        .count();
    assert_eq!(patches, 0, "the topic was where the choice was made");
    // A redelivery changes nothing.
    assert_eq!(deliver(&url, "msg_topic_1", &event).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        list(c, "ContactGroupMembershipRemoval", None).await.len(),
        1
    );
    env.assert_server_writes_clean();
}
