//! The preference page's two signed values, under the one-click keys (so one Secret, one reload
//! and one rotation serve both):
//!
//! - the **link token** `p.<key id>.<payload>.<signature>`: the payload names the Contact
//!   (namespace, name, uid) and when the link expires; the leading `p.` is signed too, so a
//!   one-click token is never a page token nor the other way round;
//! - the **form value** `<key id>.<issued>.<signature>`, a MAC of the link token's digest and the
//!   time the page was shown: every POST must carry one, and a cross-site form cannot know it
//!   (it cannot read the page). It is good for [`FORM_TTL`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::server::unsubscribe::tokens::MAX_TOKEN_BYTES;
use crate::server::unsubscribe::{Named, UnsubscribeKeys, token_id};

/// What a page token's signed part starts with.
const PREFIX: &str = "p";

/// How long a page's form value is accepted after the page was shown.
pub const FORM_TTL: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

/// Clock skew allowed for a form value issued by another replica.
const SKEW_SECONDS: i64 = 60;

/// What a page token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Payload {
    /// The Contact.
    c: Named,
    /// When the link stops working, in Unix seconds.
    exp: i64,
}

/// A page token for `contact`, good until `expires` (Unix seconds), signed with the signing key.
pub fn mint(keys: &UnsubscribeKeys, contact: &Named, expires: i64) -> String {
    let set = keys.current();
    let payload = Payload {
        c: contact.clone(),
        exp: expires,
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
    let signed = format!("{PREFIX}.{}.{payload}", set.signing.id());
    let signature = set.signing.sign(signed.as_bytes());
    format!("{signed}.{signature}")
}

/// The page link for `contact` under `base` (the listener's public address), valid for `ttl`
/// from `now` (Unix seconds).
pub fn link(
    base: &str,
    keys: &UnsubscribeKeys,
    contact: &Named,
    now: i64,
    ttl: std::time::Duration,
) -> String {
    let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    format!(
        "{}{}/{}",
        base.trim_end_matches('/'),
        super::PREFERENCES_PATH,
        mint(keys, contact, expires)
    )
}

/// Why a page token is not honoured (all answered alike, 404; the reason is only logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Forged, altered, malformed, too long, or signed by a key no longer configured.
    NotGenuine,
    /// Genuine but past its expiry.
    Expired,
}

/// The Contact a genuine, unexpired page token names at `now` (Unix seconds).
pub fn verify(keys: &UnsubscribeKeys, token: &str, now: i64) -> Result<Named, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::NotGenuine);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(Refusal::NotGenuine)?;
    let mut parts = signed.splitn(3, '.');
    let (Some(PREFIX), Some(id), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refusal::NotGenuine);
    };
    let set = keys.current();
    let key = set.by_id(id).ok_or(Refusal::NotGenuine)?;
    if !key.verifies(signed.as_bytes(), signature) {
        return Err(Refusal::NotGenuine);
    }
    let payload: Payload = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(Refusal::NotGenuine)?;
    if now >= payload.exp {
        return Err(Refusal::Expired);
    }
    Ok(payload.c)
}

fn form_data(token: &str, issued: i64) -> String {
    format!("form.{}.{issued}", token_id(token))
}

/// The form value of a page shown at `now` for `token`.
pub fn form_value(keys: &UnsubscribeKeys, token: &str, now: i64) -> String {
    let set = keys.current();
    let signature = set.signing.sign(form_data(token, now).as_bytes());
    format!("{}.{now}.{signature}", set.signing.id())
}

/// Whether `value` is a form value of a page shown for `token` within [`FORM_TTL`] of `now`.
pub fn form_value_holds(keys: &UnsubscribeKeys, token: &str, value: &str, now: i64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some(id), Some(issued), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(issued) = issued.parse::<i64>() else {
        return false;
    };
    let age = now.saturating_sub(issued);
    let ttl = i64::try_from(FORM_TTL.as_secs()).unwrap_or(i64::MAX);
    if age > ttl || age < -SKEW_SECONDS {
        return false;
    }
    let set = keys.current();
    set.by_id(id)
        .is_some_and(|key| key.verifies(form_data(token, issued).as_bytes(), signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::unsubscribe::{self, Target, UnsubscribeKey};

    fn key(byte: u8) -> UnsubscribeKey {
        UnsubscribeKey::new(&[byte; 32]).unwrap()
    }

    fn ada() -> Named {
        Named {
            namespace: "people".into(),
            name: "ada".into(),
            uid: "uid-ada".into(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_link_names_its_contact_until_it_expires_and_only_unaltered() {
        let keys = UnsubscribeKeys::single(key(1));
        let link = link(
            "https://mail.example.com/",
            &keys,
            &ada(),
            NOW,
            std::time::Duration::from_secs(30 * 86_400),
        );
        let token = link
            .strip_prefix("https://mail.example.com/preferences/")
            .unwrap();
        assert_eq!(verify(&keys, token, NOW), Ok(ada()));
        assert_eq!(verify(&keys, token, NOW + 30 * 86_400 - 1), Ok(ada()));
        assert_eq!(
            verify(&keys, token, NOW + 30 * 86_400),
            Err(Refusal::Expired)
        );
        // Altered: another contact, or a later expiry, under the same signature.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let prefix = &signed[..signed.rfind('.').unwrap()];
        for forged in [
            Payload {
                c: Named {
                    name: "eve".into(),
                    ..ada()
                },
                exp: NOW + 10,
            },
            Payload {
                c: ada(),
                exp: i64::MAX,
            },
        ] {
            let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
            let altered = format!("{prefix}.{payload}.{signature}");
            assert_eq!(verify(&keys, &altered, NOW), Err(Refusal::NotGenuine));
        }
        assert_eq!(
            verify(&UnsubscribeKeys::single(key(2)), token, NOW),
            Err(Refusal::NotGenuine),
            "another key"
        );
        for junk in ["", "p", "p.x.y", "garbage.with.dots.in", signed] {
            assert_eq!(verify(&keys, junk, NOW), Err(Refusal::NotGenuine), "{junk}");
        }
        let long = format!("{token}{}", "A".repeat(MAX_TOKEN_BYTES));
        assert_eq!(verify(&keys, &long, NOW), Err(Refusal::NotGenuine));
    }

    #[test]
    fn one_click_and_page_tokens_are_never_taken_for_each_other() {
        let keys = UnsubscribeKeys::single(key(1));
        let target = Target {
            contact: ada(),
            group: ada(),
        };
        let one_click = unsubscribe::mint(&key(1), &target);
        assert_eq!(verify(&keys, &one_click, NOW), Err(Refusal::NotGenuine));
        let page = mint(&keys, &ada(), NOW + 60);
        assert_eq!(unsubscribe::verify(&keys, &page), None);
    }

    #[test]
    fn a_rotated_key_keeps_sent_links_working() {
        let old = UnsubscribeKeys::single(key(1));
        let sent = mint(&old, &ada(), NOW + 60);
        let rotated = UnsubscribeKeys::new(key(2), vec![key(1)]);
        assert_eq!(verify(&rotated, &sent, NOW), Ok(ada()));
        let fresh = mint(&rotated, &ada(), NOW + 60);
        assert!(fresh.starts_with(&format!("p.{}.", key(2).id())), "{fresh}");
        let dropped = UnsubscribeKeys::single(key(2));
        assert_eq!(verify(&dropped, &sent, NOW), Err(Refusal::NotGenuine));
    }

    #[test]
    fn form_values_bind_the_page_and_expire() {
        let keys = UnsubscribeKeys::single(key(1));
        let token = mint(&keys, &ada(), NOW + 86_400);
        let value = form_value(&keys, &token, NOW);
        assert!(form_value_holds(&keys, &token, &value, NOW));
        assert!(form_value_holds(&keys, &token, &value, NOW + 7_199));
        assert!(
            !form_value_holds(&keys, &token, &value, NOW + 7_201),
            "expired"
        );
        assert!(
            !form_value_holds(&keys, &token, &value, NOW - 120),
            "from the future"
        );
        let other = mint(&keys, &ada(), NOW + 86_401);
        assert!(
            !form_value_holds(&keys, &other, &value, NOW),
            "another page"
        );
        let (id_issued, signature) = value.rsplit_once('.').unwrap();
        let (id, _) = id_issued.split_once('.').unwrap();
        let backdated = format!("{id}.{}.{signature}", NOW + 3_600);
        assert!(!form_value_holds(&keys, &token, &backdated, NOW + 3_600));
        for junk in ["", "a.b", "a.b.c", "x.1.y"] {
            assert!(!form_value_holds(&keys, &token, junk, NOW), "{junk}");
        }
        let rotated = UnsubscribeKeys::new(key(2), vec![key(1)]);
        assert!(form_value_holds(&rotated, &token, &value, NOW), "older key");
    }
}
