//! The hot path of review decoding: one byte scan that rejects duplicate keys without decoding
//! anything ([`keys_are_unique`]), then one typed decode of the envelope and request straight from the bytes, with the objects
//! kept as raw JSON ([`Object`]) that rules decode into exactly the types they read. Anything
//! unusual (bad JSON, a wrong envelope, a malformed request) falls back to the tree-based parser
//! in [`super::review`], so every error message stays what it was; the fast path only ever
//! answers requests that parser would accept, with the same [`Request`].

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::review::{ADMISSION_API_VERSION, Request};
use super::unique_keys::keys_are_unique;

/// An object of a review (`object`, `oldObject`): its JSON text as received, decoded on demand
/// into the type a rule reads, and into a `Value` tree only when something needs one (pointer
/// lookups on rare paths, patching).
pub struct Object<'a> {
    /// Borrowed from the review's body on the fast path; owned when built from a tree.
    raw: Cow<'a, RawValue>,
    tree: OnceLock<Value>,
    /// The object as the Rust type of its kind, decoded once for both the rule (which reads its
    /// spec) and the malformed-object check (which needs the whole object to decode).
    typed: OnceLock<Typed>,
}

/// An object decoded as the Rust type of its kind, or why it does not decode.
pub type Typed = Result<Box<dyn Any + Send + Sync>, String>;

impl Clone for Object<'_> {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            tree: self.tree.clone(),
            typed: OnceLock::new(),
        }
    }
}

impl fmt::Debug for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

impl PartialEq for Object<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(deserializer).map(|raw| Object::from_raw(Cow::Borrowed(raw)))
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'a> Object<'a> {
    /// An object from JSON text already known to be valid.
    pub fn from_raw(raw: Cow<'a, RawValue>) -> Self {
        Self {
            raw,
            tree: OnceLock::new(),
            typed: OnceLock::new(),
        }
    }

    /// An object from a tree (the offline commands parse whole files into trees).
    pub fn from_value(value: Value) -> Self {
        let raw =
            serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self {
            raw: Cow::Owned(raw),
            tree: OnceLock::from(value),
            typed: OnceLock::new(),
        }
    }

    /// The JSON text.
    pub fn raw(&self) -> &str {
        self.raw.get()
    }

    /// The object as a tree, parsed on first use.
    pub fn value(&self) -> &Value {
        self.tree
            .get_or_init(|| serde_json::from_str(self.raw.get()).unwrap_or(Value::Null))
    }

    /// The tree, owned.
    pub fn into_value(self) -> Value {
        match self.tree.into_inner() {
            Some(value) => value,
            None => serde_json::from_str(self.raw.get()).unwrap_or(Value::Null),
        }
    }

    /// The object as its kind's Rust type, decoded by `decode` on first use.
    pub fn typed(&self, decode: impl FnOnce(&str) -> Typed) -> &Typed {
        self.typed.get_or_init(|| decode(self.raw.get()))
    }

    /// Decodes the object as `T`; errors read as they would from a tree (no position).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(self.raw.get()).map_err(|e| without_position(&e))
    }

    /// The object's `spec`: `Ok(None)` when it has none, it is null, or the object is not a JSON
    /// object at all (as `Value::get` would say).
    pub fn spec<S: DeserializeOwned>(&self) -> Result<Option<S>, String> {
        let mut de = serde_json::Deserializer::from_str(self.raw.get());
        match de.deserialize_any(SpecVisitor(std::marker::PhantomData)) {
            Ok(spec) => Ok(spec),
            Err(e) => Err(without_position(&e)),
        }
    }
}

/// A serde_json error as a tree decoder words it: without " at line L column C".
pub fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if error.line() == 0 {
        return text;
    }
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

struct SpecVisitor<S>(std::marker::PhantomData<S>);

impl<'de, S: DeserializeOwned> Visitor<'de> for SpecVisitor<S> {
    type Value = Option<S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<S>, A::Error> {
        let mut spec = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == "spec" {
                spec = map.next_value::<Option<S>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(spec)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<S>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<S>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<S>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<S>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<S>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<S>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<S>, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The envelope, read straight from the body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "object_request")]
    request: Option<Request<'a>>,
}

/// `request` only when it is a JSON object (derived structs also accept arrays).
fn object_request<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Request<'de>>, D::Error> {
    struct RequestVisitor;
    impl<'de> Visitor<'de> for RequestVisitor {
        type Value = Option<Request<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an AdmissionReview request object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Request<'de>>, A::Error> {
            Request::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_map(RequestVisitor)
}

/// The fast path: `Some` only for a review the tree-based parser would accept as is.
pub fn fast_review(body: &[u8]) -> Option<Request<'_>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    if !keys_are_unique(body) {
        return None;
    }
    // Checked once here, the text decodes without serde_json checking each string it borrows.
    let text = std::str::from_utf8(body).ok()?;
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    let request = envelope.request?;
    let valid = envelope.api_version.as_deref() == Some(ADMISSION_API_VERSION)
        && envelope.kind.as_deref() == Some("AdmissionReview")
        && !request.uid.is_empty();
    valid.then_some(request)
}

#[cfg(test)]
mod tests {
    use super::super::review::{parse_review, parse_review_slowly};
    use super::*;

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
        "uid":"u1","kind":{"group":"notification.miloapis.com","version":"v1alpha1","kind":"Contact"},
        "resource":{"group":"notification.miloapis.com","version":"v1alpha1","resource":"contacts"},
        "name":"c\u0031","namespace":"ns","operation":"CREATE","userInfo":{"username":"admin"},
        "object":{"metadata":{"name":"c1"},"spec":{"email":"a@example.com"}},"oldObject":null}}"#;

    #[test]
    fn the_fast_path_reads_what_the_tree_reads() {
        let fast = fast_review(REVIEW.as_bytes()).expect("well formed");
        let slow = parse_review_slowly(REVIEW.as_bytes()).expect("well formed");
        assert_eq!(fast.uid, slow.uid);
        assert_eq!(fast.name, "c1");
        assert_eq!(fast.name, slow.name);
        assert_eq!(fast.namespace, slow.namespace);
        assert_eq!(fast.operation, slow.operation);
        assert_eq!(fast.user_info, slow.user_info);
        assert_eq!(fast.object, slow.object);
        assert!(fast.old_object.is_none() && slow.old_object.is_none());
    }

    #[test]
    fn anything_unusual_takes_the_tree_path_and_its_words() {
        let duplicate = REVIEW.replace(r#""spec":{"#, r#""spec":{"email":1,"#);
        let tampered = [
            duplicate.as_str(),
            &REVIEW.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
            &REVIEW.replace(r#""uid":"u1""#, r#""uid":"""#),
            &REVIEW
                .replace(r#""request":{"#, r#""request":[{"#)
                .replace("null}}", "null}]}"),
            &REVIEW.replace(r#""operation":"CREATE""#, r#""operation":"PATCH""#),
            "[]",
            "",
        ];
        for body in tampered {
            assert!(fast_review(body.as_bytes()).is_none(), "{body}");
            let (fast, slow) = (
                parse_review(body.as_bytes()),
                parse_review_slowly(body.as_bytes()),
            );
            assert_eq!(fast.err(), slow.err());
        }
    }

    #[test]
    fn specs_decode_from_the_raw_object() {
        let object =
            |json: &str| Object::from_raw(Cow::Owned(RawValue::from_string(json.into()).unwrap()));
        let spec = object(r#"{"kind":"X","spec":{"a":1},"status":{}}"#).spec::<Value>();
        assert_eq!(spec, Ok(Some(serde_json::json!({"a": 1}))));
        assert_eq!(object(r#"{"spec":null}"#).spec::<Value>(), Ok(None));
        assert_eq!(object(r#"[1]"#).spec::<Value>(), Ok(None));
        let error = object(r#"{"spec": "x"}"#).spec::<std::collections::BTreeMap<String, u8>>();
        assert_eq!(
            error,
            Err("invalid type: string \"x\", expected a map".to_owned())
        );
    }
}
