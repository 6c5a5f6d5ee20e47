//! Property-based fuzzing of the review decoder and the rules, through the entry point the HTTP
//! handler and `milo-webhook review` share (`parse_review` then `respond`): every fixture review
//! in `webhooks/`, mutated (fields dropped, duplicated, retyped, re-nested, strings made huge,
//! values nested deeply, the body truncated). For every input: no panic, an answer (an
//! AdmissionReview echoing the uid, or a one-line 400), and never an allow of a request that an
//! independent decoder (kube's typed AdmissionReview and the kind's Rust type) calls malformed.
//!
//! `PROPTEST_CASES` sets the number of cases (default 200, about ten seconds in debug); run a long
//! campaign with e.g. `PROPTEST_CASES=100000 cargo test --release --test fuzz_reviews -- --nocapture`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use milo_webhook::admission::chain::{Route, respond};
use milo_webhook::admission::registry::by_path;
use milo_webhook::admission::review::parse_review;
use milo_webhook::admission::{Settings, Webhook};
use milo_webhook::view::ClusterView;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

const DEFAULT_CASES: u32 = 200;
const MARK: &str = "\u{0}milo-fuzz-";

/// What a case changes; node indexes are taken modulo the number of nodes of the review.
#[derive(Clone, Debug)]
enum Mutation {
    Drop(usize),
    /// Writes a key of an object twice, the second time with a retyped value.
    Duplicate(usize, u8),
    Retype(usize, u8),
    /// Wraps a value in an array or in a one-key object.
    Wrap(usize, bool),
    /// Replaces a container with one of its children.
    Hoist(usize),
    Huge(usize, usize),
    /// Replaces a value with arrays or objects nested this deep.
    Deep(usize, usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let node = any::<usize>();
    prop_oneof![
        node.prop_map(Mutation::Drop),
        (node, any::<u8>()).prop_map(|(n, t)| Mutation::Duplicate(n, t)),
        (node, any::<u8>()).prop_map(|(n, t)| Mutation::Retype(n, t)),
        (node, any::<bool>()).prop_map(|(n, a)| Mutation::Wrap(n, a)),
        node.prop_map(Mutation::Hoist),
        (node, 1usize..1_000_000).prop_map(|(n, len)| Mutation::Huge(n, len)),
        (node, 2usize..5_000, any::<bool>()).prop_map(|(n, d, a)| Mutation::Deep(n, d, a)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Key(usize),
    Index(usize),
}

/// Every node below the root, as paths of positions.
fn paths(value: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        let children: Vec<(Step, &Value)> = match value {
            Value::Object(map) => map
                .values()
                .enumerate()
                .map(|(i, v)| (Step::Key(i), v))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Step::Index(i), v))
                .collect(),
            _ => Vec::new(),
        };
        for (step, child) in children {
            path.push(step);
            out.push(path.clone());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// The parent container of the node at `path` and the node's position in it.
fn parent<'v>(root: &'v mut Value, path: &[Step]) -> Option<(&'v mut Value, Step)> {
    let (last, up) = path.split_last()?;
    let mut node = root;
    for step in up {
        node = match (node, step) {
            (Value::Object(map), Step::Key(i)) => map.values_mut().nth(*i)?,
            (Value::Array(items), Step::Index(i)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some((node, *last))
}

fn node<'v>(root: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    match parent(root, path)? {
        (Value::Object(map), Step::Key(i)) => map.values_mut().nth(i),
        (Value::Array(items), Step::Index(i)) => items.get_mut(i),
        _ => None,
    }
}

fn retyped(value: &Value, choice: u8) -> Value {
    let options = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(1.5e300),
        json!(""),
        json!("not-the-right-thing"),
        json!([]),
        json!({}),
        json!([value.clone()]),
        json!({"": value.clone()}),
    ];
    let index = choice as usize % options.len();
    // Always a change of type or value.
    if options[index] == *value {
        options[(index + 1) % options.len()].clone()
    } else {
        options[index].clone()
    }
}

/// Applies the mutations; text markers stand for what a `Value` cannot hold (duplicate keys,
/// nesting deeper than a `Value` should be built), replaced when the body is rendered.
fn mutate(review: &Value, mutations: &[Mutation]) -> (Value, Vec<(String, String)>) {
    let mut value = review.clone();
    let mut markers = Vec::new();
    for mutation in mutations {
        let all = paths(&value);
        if all.is_empty() {
            break;
        }
        let pick = |n: usize| all[n % all.len()].clone();
        match *mutation {
            Mutation::Drop(n) => match parent(&mut value, &pick(n)) {
                Some((Value::Object(map), Step::Key(i))) => {
                    if let Some(key) = map.keys().nth(i).cloned() {
                        map.remove(&key);
                    }
                }
                Some((Value::Array(items), Step::Index(i))) if i < items.len() => {
                    items.remove(i);
                }
                _ => {}
            },
            Mutation::Duplicate(n, t) => {
                if let Some((Value::Object(map), Step::Key(i))) = parent(&mut value, &pick(n))
                    && let Some((key, original)) =
                        map.iter().nth(i).map(|(k, v)| (k.clone(), v.clone()))
                {
                    let marker = format!("{MARK}dup-{}", markers.len());
                    map.insert(marker.clone(), retyped(&original, t));
                    markers.push((
                        serde_json::to_string(&marker).unwrap(),
                        serde_json::to_string(&key).unwrap(),
                    ));
                }
            }
            Mutation::Retype(n, t) => {
                if let Some(target) = node(&mut value, &pick(n)) {
                    *target = retyped(target, t);
                }
            }
            Mutation::Wrap(n, as_array) => {
                if let Some(target) = node(&mut value, &pick(n)) {
                    let inner = target.take();
                    *target = if as_array {
                        json!([inner])
                    } else {
                        json!({"wrapped": inner})
                    };
                }
            }
            Mutation::Hoist(n) => {
                if let Some(target) = node(&mut value, &pick(n)) {
                    let child = match target {
                        Value::Object(map) => map.values().next().cloned(),
                        Value::Array(items) => items.first().cloned(),
                        _ => None,
                    };
                    if let Some(child) = child {
                        *target = child;
                    }
                }
            }
            Mutation::Huge(n, len) => {
                if let Some(target) = node(&mut value, &pick(n)) {
                    *target = Value::String("é".repeat(len / 2));
                }
            }
            Mutation::Deep(n, depth, arrays) => {
                if let Some(target) = node(&mut value, &pick(n)) {
                    let marker = format!("{MARK}deep-{}", markers.len());
                    *target = Value::String(marker.clone());
                    let text = if arrays {
                        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
                    } else {
                        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
                    };
                    markers.push((serde_json::to_string(&marker).unwrap(), text));
                }
            }
        }
    }
    (value, markers)
}

fn render(value: &Value, markers: &[(String, String)], truncate: Option<u16>) -> Vec<u8> {
    let mut text = serde_json::to_string(value).unwrap();
    for (marker, replacement) in markers {
        text = text.replacen(marker.as_str(), replacement, 1);
    }
    let mut bytes = text.into_bytes();
    if let Some(permille) = truncate {
        bytes.truncate(bytes.len() * usize::from(permille % 1000) / 1000);
    }
    bytes
}

fn typed<K: DeserializeOwned>(object: &Value) -> bool {
    serde_json::from_value::<K>(object.clone()).is_ok()
}

/// An independent judgement: kube's AdmissionReview decoder, then the object (and old object)
/// as the Rust type of its kind.
fn well_formed(body: &[u8]) -> bool {
    use milo_webhook::api::{
        Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
        ContactGroupMembershipRemoval, Email, EmailTemplate, User, UserInvitation,
    };
    let Ok(review) = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) else {
        return false;
    };
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return false;
    }
    let Ok(request): Result<AdmissionRequest<DynamicObject>, _> = review.try_into() else {
        return false;
    };
    if request.uid.is_empty() {
        return false;
    }
    let Ok(raw) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let objects = ["object", "oldObject"]
        .map(|field| raw["request"].get(field).filter(|o| !o.is_null()).cloned());
    objects
        .iter()
        .flatten()
        .all(|object| match request.kind.kind.as_str() {
            "Contact" => typed::<Contact>(object),
            "ContactGroup" => typed::<ContactGroup>(object),
            "ContactGroupMembership" => typed::<ContactGroupMembership>(object),
            "ContactGroupMembershipRemoval" => typed::<ContactGroupMembershipRemoval>(object),
            "ContactGroupEnrollmentPolicy" => typed::<ContactGroupEnrollmentPolicy>(object),
            "UserInvitation" => typed::<UserInvitation>(object),
            "User" => typed::<User>(object),
            "Email" => typed::<Email>(object),
            "EmailTemplate" => typed::<EmailTemplate>(object),
            _ => object.is_object(),
        })
}

/// The body with a response's base64 JSON Patch applied to `request.object`.
fn patched(body: &[u8], patch: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .ok()?;
    let patch: json_patch::Patch = serde_json::from_slice(&patch).ok()?;
    let mut review: Value = serde_json::from_slice(body).ok()?;
    json_patch::patch(review.pointer_mut("/request/object")?, &patch).ok()?;
    serde_json::to_vec(&review).ok()
}

struct Case {
    name: String,
    review: Value,
    webhook: &'static Webhook,
    view: ClusterView,
    settings: Settings,
}

#[test]
fn mutated_fixture_reviews_are_always_answered_and_never_allowed_when_malformed() {
    let corpus: Vec<Case> = support::fixtures::all()
        .into_iter()
        .filter_map(|f| {
            Some(Case {
                review: f.review()?,
                webhook: by_path(&f.path)?,
                view: ClusterView::offline(f.store()),
                settings: f.settings(),
                name: f.name.clone(),
            })
        })
        .collect();
    assert!(
        corpus.len() > 100,
        "the corpus is read ({} reviews)",
        corpus.len()
    );
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (ran, allowed, malformed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let slowest = std::sync::Mutex::new((Duration::ZERO, String::new()));
    let strategy = (
        0..corpus.len(),
        prop::collection::vec(mutation(), 0..4),
        prop::option::weighted(0.15, any::<u16>()),
    );
    let result = runner.run(&strategy, |(index, mutations, truncate)| {
        let case = &corpus[index];
        let (value, markers) = mutate(&case.review, &mutations);
        let body = render(&value, &markers, truncate);
        let started = Instant::now();
        let answers = [
            respond(
                Route::One(case.webhook),
                parse_review(&body),
                &case.view,
                &case.settings,
            ),
            respond(Route::All, parse_review(&body), &case.view, &case.settings),
        ];
        let took = started.elapsed();
        ran.fetch_add(1, Ordering::Relaxed);
        {
            let mut slowest = slowest.lock().unwrap();
            if took > slowest.0 {
                *slowest = (took, format!("{} with {mutations:?}", case.name));
            }
        }
        let sound = well_formed(&body);
        if !sound {
            malformed.fetch_add(1, Ordering::Relaxed);
        }
        for answer in answers {
            match answer {
                Ok(reply) => {
                    let uid = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                        v.pointer("/request/uid")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
                    prop_assert_eq!(Some(&reply.response.uid), uid.as_ref(), "the uid is echoed");
                    if reply.response.allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                        // A mutating webhook may repair what it overwrites: the API server
                        // validates the patched object, so that is what is judged.
                        let sound = match &reply.response.patch {
                            None => sound,
                            Some(patch) => patched(&body, patch).is_some_and(|b| well_formed(&b)),
                        };
                        prop_assert!(
                            sound,
                            "{} allowed a malformed request after {:?}: {}",
                            case.name,
                            mutations,
                            String::from_utf8_lossy(&body[..body.len().min(2000)])
                        );
                    }
                }
                Err(message) => {
                    prop_assert!(
                        !message.is_empty() && !message.contains('\n'),
                        "one line: {message:?}"
                    );
                }
            }
        }
        Ok::<(), TestCaseError>(())
    });
    let (took, which) = slowest.into_inner().unwrap();
    println!(
        "fuzzed {} cases ({} allowed answers, {} malformed inputs); slowest {took:?}: {which}",
        ran.load(Ordering::Relaxed),
        allowed.load(Ordering::Relaxed),
        malformed.load(Ordering::Relaxed),
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(ran.load(Ordering::Relaxed) >= cases as usize);
    assert!(
        malformed.load(Ordering::Relaxed) > 0,
        "the mutations do damage"
    );
}

#[test]
fn the_mutations_do_what_they_say() {
    let review = json!({"a": {"b": 1, "c": "x"}, "d": [true]});
    let (value, markers) = mutate(&review, &[Mutation::Duplicate(1, 4)]);
    let text = String::from_utf8(render(&value, &markers, None)).unwrap();
    assert_eq!(text.matches("\"b\":").count(), 2, "{text}");
    let (value, markers) = mutate(&review, &[Mutation::Deep(0, 300, true)]);
    let text = String::from_utf8(render(&value, &markers, None)).unwrap();
    assert!(text.contains(&"[".repeat(300)), "{text}");
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "deeper than serde_json's limit"
    );
    let (value, _) = mutate(&review, &[Mutation::Drop(0)]);
    assert_eq!(value, json!({"d": [true]}));
    let mut map = Map::new();
    map.insert("k".into(), json!(1));
    assert_ne!(retyped(&Value::Object(map.clone()), 7), Value::Object(map));
    assert_eq!(render(&review, &[], Some(0)), b"");
}
