//! Preference page benchmark: the page's time to first byte under many concurrent readers, from
//! a warm view, offline. The real routes (`server::preferences::router`) serve over TCP on
//! loopback with HTTP/1.1 keep-alive; the view is a follower's (admission fields only, as every
//! replica serving the events listener keeps), filled with `--contacts` Contacts in one
//! namespace, `--groups` groups (half public), three memberships per Contact and a removal for
//! one Contact in ten. Each of `--readers` clients asks for `--requests` pages of random
//! Contacts, one after another.
//!
//! `cargo bench --bench preference_page -- [--contacts N] [--groups G] [--readers R]
//! [--requests K]` (defaults: 100,000 contacts, 20 groups, 100 readers, 200 requests each).
//! Reports TTFB (request written to response head read) p50/p99/max against the goal (p99 under
//! 50 ms), pages per second, page bytes, and the process's memory.

#[path = "../tests/support/bench.rs"]
mod bench;

use std::sync::Arc;
use std::time::Instant;

use bench::{flags, memory, parse};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use milo_webhook::api::common::ObjectRef;
use milo_webhook::api::notification::{
    ContactGroupMembershipRemovalSpec, ContactGroupMembershipSpec, ContactGroupSpec, ContactSpec,
    Visibility,
};
use milo_webhook::api::{
    Contact, ContactGroup, ContactGroupMembership, ContactGroupMembershipRemoval,
};
use milo_webhook::server::preferences::{Changed, Choice, PreferenceSink, router, tokens};
use milo_webhook::server::unsubscribe::{Named, UnsubscribeKey, UnsubscribeKeys};
use milo_webhook::view::ClusterView;
use milo_webhook::view::store::Store;

struct Options {
    contacts: usize,
    groups: usize,
    readers: usize,
    requests: usize,
}

fn options() -> Options {
    let mut o = Options {
        contacts: 100_000,
        groups: 20,
        readers: 100,
        requests: 200,
    };
    flags(|flag, value| {
        match flag {
            "--contacts" => o.contacts = parse(value)?,
            "--groups" => o.groups = parse(value)?,
            "--readers" => o.readers = parse(value)?,
            "--requests" => o.requests = parse(value)?,
            other => return Err(format!("unknown flag {other}")),
        }
        Ok(())
    });
    o.groups = o.groups.max(1);
    o
}

/// The page's writes are not measured here: a sink that refuses them.
struct NoWrites;

impl PreferenceSink for NoWrites {
    fn change(
        &self,
        _: Named,
        _: ObjectRef,
        _: Choice,
        _: String,
    ) -> BoxFuture<'static, Result<Changed, String>> {
        Box::pin(async { Err("the benchmark makes no changes".to_owned()) })
    }
}

fn refs(contact: usize, group: usize) -> (ObjectRef, ObjectRef) {
    (
        ObjectRef {
            namespace: "people".into(),
            name: format!("c{contact:06}"),
        },
        ObjectRef {
            namespace: "people".into(),
            name: format!("g{group:03}"),
        },
    )
}

/// A follower's view of the cluster, and every Contact's uid.
fn warm_view(o: &Options) -> (Store, Vec<String>) {
    let mut store = Store::admission_only();
    for g in 0..o.groups {
        let mut group = ContactGroup::new(
            &format!("g{g:03}"),
            ContactGroupSpec {
                display_name: format!("Group {g}"),
                visibility: if g % 2 == 0 {
                    Visibility::Public
                } else {
                    Visibility::Private
                },
                description: Some(format!("What group {g} is for, in a sentence or two.")),
                providers: Vec::new(),
            },
        );
        group.metadata.namespace = Some("people".into());
        store.apply_group(&group);
    }
    let mut uids = Vec::with_capacity(o.contacts);
    for c in 0..o.contacts {
        let name = format!("c{c:06}");
        let mut contact = Contact::new(
            &name,
            ContactSpec {
                email: format!("{name}@example.com"),
                given_name: Some("Given".into()),
                family_name: None,
                subject: None,
            },
        );
        let uid = format!("00000000-0000-4000-8000-{c:012}");
        contact.metadata.namespace = Some("people".into());
        contact.metadata.uid = Some(uid.clone());
        store.apply_contact(&contact);
        uids.push(uid);
        for k in 0..3 {
            let (contact_ref, group_ref) = refs(c, (c + k) % o.groups);
            let mut m = ContactGroupMembership::new(
                &format!("m-{c:06}-{k}"),
                ContactGroupMembershipSpec {
                    contact_ref,
                    contact_group_ref: group_ref,
                },
            );
            m.metadata.namespace = Some("people".into());
            store.apply_membership(&m);
        }
        if c % 10 == 0 {
            let (contact_ref, group_ref) = refs(c, (c + 3) % o.groups);
            let mut r = ContactGroupMembershipRemoval::new(
                &format!("r-{c:06}"),
                ContactGroupMembershipRemovalSpec {
                    contact_ref,
                    contact_group_ref: group_ref,
                },
            );
            r.metadata.namespace = Some("people".into());
            store.apply_removal(&r);
        }
    }
    (store, uids)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let (rss_before, _) = memory();
    let started = Instant::now();
    let (store, uids) = warm_view(&o);
    let (rss_view, _) = memory();
    println!(
        "view: {} contacts, {} groups, {} memberships, {} removals in {:.1} s; RSS {:.1} MiB ({:.1} MiB for the view)",
        o.contacts,
        o.groups,
        o.contacts * 3,
        o.contacts.div_ceil(10),
        started.elapsed().as_secs_f64(),
        rss_view,
        rss_view - rss_before
    );
    let view = Arc::new(ClusterView::offline(store));
    let keys = UnsubscribeKeys::single(UnsubscribeKey::new(&[7u8; 32]).unwrap());
    let expires = jiff::Timestamp::now().as_second() + 3_600;
    let paths: Arc<Vec<String>> = Arc::new(
        uids.iter()
            .enumerate()
            .map(|(c, uid)| {
                let named = Named {
                    namespace: "people".into(),
                    name: format!("c{c:06}"),
                    uid: uid.clone(),
                };
                format!("/preferences/{}", tokens::mint(&keys, &named, expires))
            })
            .collect(),
    );
    let app = router(keys, view, Arc::new(NoWrites));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let mut readers = Vec::new();
    for reader in 0..o.readers {
        let paths = paths.clone();
        let requests = o.requests;
        readers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut rng = fastrand::Rng::with_seed(reader as u64);
            let mut ttfb = Vec::with_capacity(requests);
            let mut bytes = 0usize;
            for _ in 0..requests {
                let path = &paths[rng.usize(..paths.len())];
                let request = hyper::Request::get(path.as_str())
                    .header("host", "bench")
                    .body(Empty::new())
                    .unwrap();
                sender.ready().await.unwrap();
                let sent = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                ttfb.push(sent.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(response.status(), 200);
                bytes += response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .len();
            }
            (ttfb, bytes)
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for reader in readers {
        let (ttfb, b) = reader.await.unwrap();
        all.extend(ttfb);
        bytes += b;
    }
    let elapsed = started.elapsed();
    all.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0.0),
    );
    let (rss, peak) = memory();
    println!(
        "{} pages by {} readers in {:.2} s: {:.0} pages/s; {:.0} bytes per page",
        all.len(),
        o.readers,
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        bytes as f64 / all.len().max(1) as f64,
    );
    println!(
        "TTFB p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (goal: p99 < 50 ms: {}); RSS {rss:.1} MiB, peak {peak:.1} MiB",
        if p99 < 50.0 { "met" } else { "NOT met" }
    );
}
