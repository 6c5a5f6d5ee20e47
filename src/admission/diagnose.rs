//! Wording what is wrong with a review body the fast path ([`super::decode::fast_review`])
//! refused, without building a tree of it: a tree costs up to 16 bytes per byte of input (an
//! 8 MiB `[0,0,…]` took 144 MiB), and anyone who can reach the port chooses the input. One pass
//! checks the JSON (syntax and repeated keys, the same errors at the same places as the
//! tree-based parser); then the envelope and the request are read as raw slices of the body, and
//! only the request's own fields are decoded, as the fast path does. Nothing is allocated in
//! proportion to the body but the keys of the objects open at one time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::decode::without_position;
use super::review::{ADMISSION_API_VERSION, BadReview, Request};

/// Reads a body the fast path refused: the review when it is one after all, else why not, in
/// the words of the tree-based parser ([`super::review::parse_review_slowly`]).
pub fn diagnose(body: &[u8]) -> Result<Request<'_>, BadReview> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            None,
            "request body is empty: expected an AdmissionReview",
        ));
    }
    if let Err(e) = serde_json::from_slice::<Checked>(body) {
        return Err(bad(None, format!("request body is not valid JSON: {e}")));
    }
    // Valid JSON is valid UTF-8: every string was checked, and nothing else may be non-ASCII.
    let text = std::str::from_utf8(body)
        .map_err(|e| bad(None, format!("request body is not valid JSON: {e}")))?;
    let not_a_review = || bad(None, "request body is not an AdmissionReview object");
    let envelope = serde_json::from_str::<Option<Fields<'_>>>(text)
        .ok()
        .flatten()
        .ok_or_else(not_a_review)?;
    let Some(raw) = envelope.get("request").filter(|raw| is_object(raw)) else {
        return Err(bad(None, "AdmissionReview has no request"));
    };
    let request: Fields<'_> = serde_json::from_str::<Option<Fields<'_>>>(raw.get())
        .ok()
        .flatten()
        .ok_or_else(|| bad(None, "AdmissionReview has no request"))?;
    let uid = match request.string("uid") {
        Some(uid) if !uid.is_empty() => uid,
        _ => return Err(bad(None, "AdmissionReview request has no uid")),
    };
    let uid = Some(uid.as_ref());
    let api_version = envelope.string("apiVersion").unwrap_or_default();
    if api_version != ADMISSION_API_VERSION {
        return Err(bad(
            uid,
            format!(
                "unsupported AdmissionReview apiVersion {api_version:?}: only {ADMISSION_API_VERSION} is served"
            ),
        ));
    }
    let kind = envelope.string("kind").unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(bad(
            uid,
            format!("expected kind AdmissionReview, got {kind:?}"),
        ));
    }
    // The objects come along as raw slices, so only the request's own fields can be wrong here.
    serde_json::from_str::<Request<'_>>(raw.get()).map_err(|e| {
        let message = format!(
            "AdmissionReview request is malformed: {}",
            without_position(&e)
        );
        bad(uid, message)
    })
}

fn bad(uid: Option<&str>, message: impl Into<String>) -> BadReview {
    BadReview {
        uid: uid.map(str::to_owned),
        message: message.into(),
    }
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// A JSON object's members as raw slices of the body. Keys are unique (checked before).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The member `key` when it is a string (as `Value::as_str` reads it).
    fn string(&self, key: &str) -> Option<Cow<'a, str>> {
        serde_json::from_str::<Cow<'a, str>>(self.get(key)?.get()).ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// Any JSON value, checked and thrown away: what the tree-based parser would refuse is refused
/// with the same error (a repeated key included), and nothing but the keys of the open objects
/// is kept.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        Checked::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut keys: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value::<Checked>()?;
            keys.insert(key);
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::super::review::parse_review_slowly;
    use super::*;

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
        "uid":"u1","kind":{"group":"notification.miloapis.com","version":"v1alpha1","kind":"Contact"},
        "resource":{"group":"notification.miloapis.com","version":"v1alpha1","resource":"contacts"},
        "name":"c1","namespace":"ns","operation":"CREATE","userInfo":{"username":"admin"},
        "object":{"metadata":{"name":"c1"},"spec":{"email":"a@example.com"}},"oldObject":null}}"#;

    /// Every way a body can be wrong that the tree-based parser words: the bounded path words it
    /// the same.
    #[test]
    fn the_bounded_path_words_errors_as_the_tree_does() {
        let bodies = [
            "",
            "  \n",
            "nonsense",
            "[0,0,0]",
            "null",
            r#"{"a":1,"a":2}"#,
            r#"{"request":{"uid":"x","uid":"y"}}"#,
            "{\"request\":\"\u{0}\"",
            "{}",
            r#"{"request":null}"#,
            r#"{"request":[]}"#,
            r#"{"request":{}}"#,
            r#"{"request":{"uid":""}}"#,
            r#"{"request":{"uid":7}}"#,
            r#"{"request":{"uid":"u"}}"#,
            r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u"}}"#,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#,
            &REVIEW.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
            &REVIEW.replace(r#""operation":"CREATE""#, r#""operation":"PATCH""#),
            &REVIEW.replace(r#""userInfo":{"username":"admin"},"#, ""),
            &REVIEW.replace(r#""name":"c1","#, r#""name":7,"#),
            &format!("{REVIEW} trailing"),
            &REVIEW[..REVIEW.len() - 3],
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        ];
        for body in bodies {
            let (bounded, tree) = (
                diagnose(body.as_bytes()).map(|r| r.uid.into_owned()),
                parse_review_slowly(body.as_bytes()).map(|r| r.uid.into_owned()),
            );
            assert_eq!(bounded, tree, "{body}");
        }
        let bytes = b"{\"request\":\"\xff\"}";
        assert_eq!(
            diagnose(bytes).map(|r| r.uid),
            parse_review_slowly(bytes).map(|r| r.uid)
        );
    }

    #[test]
    fn a_review_the_fast_path_skips_is_still_read() {
        // An escaped key takes the slow path; it is still a review.
        let escaped = REVIEW.replace(r#""uid":"u1""#, r#""\u0075id":"u1""#);
        let request = diagnose(escaped.as_bytes()).expect("a review");
        assert_eq!(request.uid, "u1");
        assert_eq!(request.name, "c1");
        assert!(request.object.is_some() && request.old_object.is_none());
    }
}
