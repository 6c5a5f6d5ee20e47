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

/// Objects with up to this many keys are checked for a repeated key as each key is read; larger
/// ones (label maps, `managedFields`) are sorted once when they close, so no body costs more
/// than `n log n` comparisons.
const LINEAR_KEYS: usize = 32;

/// Nesting deeper than serde_json decodes (its recursion limit is 128) is left to it to refuse.
const MAX_DEPTH: usize = 128;

/// Whether no JSON object in `body` names a key twice, found in one pass over the bytes without
/// decoding anything. Only meaningful for valid JSON (the typed decode that follows checks that):
/// it reads keys where the grammar puts them and skips every other token. `false` also for what
/// it does not try to judge, a key with an escape sequence (`"a"` and `"\u0061"` are the same
/// key) or nesting past [`MAX_DEPTH`]: such bodies take the tree-based parser, which words the
/// error.
pub fn keys_are_unique(body: &[u8]) -> bool {
    /// An open array, or an open object with its first key's index in `keys`.
    #[derive(Clone, Copy)]
    enum Open {
        Array,
        Object(usize),
    }
    let mut keys: Vec<&[u8]> = Vec::with_capacity(64);
    let mut open: Vec<Open> = Vec::with_capacity(16);
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&byte) = body.get(i) {
        i += 1;
        match byte {
            b'"' => {
                let (start, mut escaped) = (i, false);
                loop {
                    let Some(at) = body
                        .get(i..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        return false;
                    };
                    i += at;
                    if body[i] == b'"' {
                        break;
                    }
                    escaped = true;
                    i += 2;
                }
                let key = &body[start..i];
                i += 1;
                if !expect_key {
                    continue;
                }
                expect_key = false;
                let Some(&Open::Object(first)) = open.last() else {
                    return false;
                };
                let siblings = &keys[first..];
                if escaped || (siblings.len() < LINEAR_KEYS && siblings.contains(&key)) {
                    return false;
                }
                keys.push(key);
            }
            b'{' | b'[' if open.len() >= MAX_DEPTH => return false,
            b'{' => {
                open.push(Open::Object(keys.len()));
                expect_key = true;
            }
            b'[' => {
                open.push(Open::Array);
                expect_key = false;
            }
            b'}' | b']' => {
                expect_key = false;
                match open.pop() {
                    Some(Open::Object(first)) => {
                        let siblings = &mut keys[first..];
                        if siblings.len() > LINEAR_KEYS {
                            siblings.sort_unstable();
                            if siblings.windows(2).any(|pair| pair[0] == pair[1]) {
                                return false;
                            }
                        }
                        keys.truncate(first);
                    }
                    Some(Open::Array) => {}
                    None => return false,
                }
            }
            b',' => expect_key = matches!(open.last(), Some(Open::Object(_))),
            _ => {}
        }
    }
    open.is_empty()
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
    let envelope: Envelope<'_> = serde_json::from_slice(body).ok()?;
    let request = envelope.request?;
    let valid = envelope.api_version.as_deref() == Some(ADMISSION_API_VERSION)
        && envelope.kind.as_deref() == Some("AdmissionReview")
        && !request.uid.is_empty();
    valid.then_some(request)
}

#[cfg(test)]
mod tests {
    use super::super::review::{json_without_duplicate_keys, parse_review, parse_review_slowly};
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
    fn the_key_scan_finds_repeats_at_any_depth_and_only_there() {
        let unique = [
            r#"{"a":1,"b":{"a":2,"b":[{"a":3},{"a":4}]},"c":"{\"a\":1,\"a\":2}"}"#,
            r#"[{"a":1},{"a":1}]"#,
            r#"{"a":"}","b":"\\","c":[],"d":{}}"#,
            r#"{}"#,
            r#""a""#,
        ];
        for body in unique {
            assert!(keys_are_unique(body.as_bytes()), "{body}");
        }
        let many: Vec<String> = (0..100).map(|k| format!(r#""k{k}":{k}"#)).collect();
        assert!(keys_are_unique(
            format!("{{{}}}", many.join(",")).as_bytes()
        ));
        let refused = [
            r#"{"a":1,"a":2}"#.to_owned(),
            r#"{"x":{"b":[{"a":1,"c":{"d":1,"d":1}}]}}"#.to_owned(),
            r#"[1,{"a":{},"a":[]}]"#.to_owned(),
            // After the linear limit, found when the object closes.
            format!(r#"{{{},"k7":0}}"#, many.join(",")),
            // Escaped keys are left to the tree-based parser.
            r#"{"\u0061":1}"#.to_owned(),
            // Unbalanced or unterminated text.
            r#"{"a":1"#.to_owned(),
            r#"{"a":1}}"#.to_owned(),
            r#"{"a"#.to_owned(),
            format!(
                "{}1{}",
                "[".repeat(MAX_DEPTH + 1),
                "]".repeat(MAX_DEPTH + 1)
            ),
        ];
        for body in refused {
            assert!(!keys_are_unique(body.as_bytes()), "{body}");
        }
    }

    /// A JSON tree whose objects may repeat keys (drawn from few names), written out by hand.
    #[derive(Clone, Debug)]
    enum Json {
        Leaf(String),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        fn write(&self, out: &mut String) {
            match self {
                Json::Leaf(text) => out.push_str(text),
                Json::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        out.push_str(if i == 0 { "" } else { "," });
                        item.write(out);
                    }
                    out.push(']');
                }
                Json::Object(members) => {
                    out.push('{');
                    for (i, (key, value)) in members.iter().enumerate() {
                        out.push_str(if i == 0 { "" } else { " , " });
                        out.push_str(&serde_json::to_string(key).unwrap());
                        out.push_str(" : ");
                        value.write(out);
                    }
                    out.push('}');
                }
            }
        }
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Json> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            // Strings full of structure: braces, quotes, backslashes, commas, colons.
            "[a-c{}\\[\\]\":,\\\\ ]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ]
        .prop_map(Json::Leaf);
        leaf.prop_recursive(6, 96, 40, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                // Few names, so repeats are common; sometimes past the linear limit.
                proptest::collection::vec(("[a-e]", inner.clone()), 0..6).prop_map(Json::Object),
                proptest::collection::vec(("[a-z]{1,2}", inner), 30..40).prop_map(Json::Object),
            ]
        })
    }

    proptest::proptest! {
        /// The scan agrees with the tree-based parser on every JSON text whose keys need no
        /// escapes.
        #[test]
        fn the_key_scan_agrees_with_the_tree(tree in json()) {
            let mut text = String::new();
            tree.write(&mut text);
            let tree_says = json_without_duplicate_keys(text.as_bytes()).is_ok();
            proptest::prop_assert_eq!(keys_are_unique(text.as_bytes()), tree_says, "{}", text);
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
