//! The parts of a review read in our own types rather than kube's and k8s-openapi's: borrowed
//! from the body, or (what no rule reads but must still be well formed, so that a malformed
//! request is refused like any other) checked and kept as nothing, so they cost no allocation.
//! Each accepts exactly what the type it stands in for accepts (kube's `GroupVersionKind` and
//! `GroupVersionResource`, k8s-openapi's `UserInfo`, a list of strings), with the same words when
//! it does not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON string, checked and not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl Visitor<'_> for StringVisitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(StringVisitor)
    }
}

/// A list of strings (`userInfo.groups`), checked and not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnyStrings;

impl<'de> Deserialize<'de> for AnyStrings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = AnyStrings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyStrings, A::Error> {
                while seq.next_element::<AnyString>()?.is_some() {}
                Ok(AnyStrings)
            }
        }
        deserializer.deserialize_seq(StringsVisitor)
    }
}

/// `kind`, read as kube's `GroupVersionKind` reads it, named alike so that errors read the same
/// ("expected struct GroupVersionKind"), with its strings borrowed from the body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind<'a> {
    /// API group ("" for the core group).
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    /// API version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// Kind.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// `resource`, read as kube's `GroupVersionResource` reads it, with its strings borrowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GroupVersionResource<'a> {
    /// API group ("" for the core group).
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    /// API version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// Plural resource name.
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
    #[serde(default)]
    api_version: AnyString,
}

/// `request.userInfo`, as k8s-openapi's `UserInfo` reads it (a JSON object only, every field
/// optional, null as absent), with `groups`, which no rule reads, checked and not kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserInfo<'a> {
    /// The requester's name.
    pub username: Option<Cow<'a, str>>,
    /// The requester's uid: in Milo, the name of their User.
    pub uid: Option<Cow<'a, str>>,
    /// Whether a `groups` list was sent.
    pub groups: Option<AnyStrings>,
    /// Extra attributes; Milo's parent-type and parent-name mark requests made in user context.
    pub extra: Option<BTreeMap<String, Vec<String>>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for UserInfo<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(borrow, default)]
            username: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            uid: Option<Cow<'a, str>>,
            #[serde(default)]
            groups: Option<AnyStrings>,
            #[serde(default)]
            extra: Option<BTreeMap<String, Vec<String>>>,
        }
        struct UserInfoVisitor;
        impl<'de> Visitor<'de> for UserInfoVisitor {
            type Value = UserInfo<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("UserInfo")
            }
            // A derived struct would also take a JSON array; k8s-openapi's type does not.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UserInfo<'de>, A::Error> {
                let f = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(UserInfo {
                    username: f.username,
                    uid: f.uid,
                    groups: f.groups,
                    extra: f.extra,
                })
            }
        }
        deserializer.deserialize_map(UserInfoVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Whether `value` decodes as `T`, and with which error.
    fn verdict<'a, T: Deserialize<'a>>(value: &'a Value) -> Result<(), String> {
        T::deserialize(value).map(drop).map_err(|e| e.to_string())
    }

    #[test]
    fn shapes_accept_and_refuse_what_the_types_they_stand_in_for_do() {
        use k8s_openapi::api::authentication::v1::UserInfo as OpenApiUserInfo;
        use kube::core::{GroupVersionKind as KubeKind, GroupVersionResource as KubeResource};
        let gvk = json!({"group": "g", "version": "v1", "kind": "K"});
        let gvr = json!({"group": "g", "version": "v1", "resource": "ks"});
        let kinds = [
            gvk.clone(),
            json!(["g", "v1", "K"]),
            json!({"group": "g", "version": "v1"}),
            json!({"group": 1, "version": "v1", "kind": "K"}),
            json!({"group": null, "version": "v1", "kind": "K"}),
            json!({"group": "g", "version": "v1", "kind": "K", "extra": [1]}),
            json!("g/v1"),
            Value::Null,
        ];
        for value in &kinds {
            assert_eq!(
                verdict::<GroupVersionKind>(value),
                verdict::<KubeKind>(value),
                "{value}"
            );
        }
        let resources = [
            gvr.clone(),
            json!({"group": "g", "version": "v1", "resource": "ks", "api_version": "g/v1"}),
            json!({"group": "g", "version": "v1", "resource": "ks", "api_version": 2}),
            json!({"group": "g", "resource": "ks"}),
            json!(["g", "v1", "ks"]),
        ];
        for value in &resources {
            assert_eq!(
                verdict::<GroupVersionResource>(value),
                verdict::<KubeResource>(value),
                "{value}"
            );
        }
        let users = [
            json!({"username": "a", "uid": "u", "groups": ["x", "y"], "extra": {"k": ["v"]}}),
            json!({}),
            json!({"username": null, "groups": null, "extra": null}),
            json!({"groups": "x"}),
            json!({"groups": ["x", 1]}),
            json!({"groups": [null]}),
            json!({"extra": {"k": "v"}}),
            json!({"username": 1}),
            json!({"other": {"deep": [1]}}),
            json!(["a", "u"]),
            json!("admin"),
        ];
        for value in &users {
            assert_eq!(
                verdict::<UserInfo>(value),
                verdict::<OpenApiUserInfo>(value),
                "{value}"
            );
        }
        let full = UserInfo::deserialize(&users[0]).unwrap();
        assert_eq!(full.username.as_deref(), Some("a"));
        assert_eq!(full.uid.as_deref(), Some("u"));
        assert_eq!(full.groups, Some(AnyStrings));
        assert_eq!(full.extra.unwrap()["k"], ["v"]);
    }
}
