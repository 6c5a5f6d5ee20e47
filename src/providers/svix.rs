//! Standard Webhooks (Svix) signatures, which Resend and Loops put on the events they send.
//!
//! The sender signs `"{id}.{timestamp}.{raw body}"` with HMAC-SHA256 under the endpoint's secret
//! and sends the base64 result as one or more space-separated `v1,<signature>` entries (several
//! while a secret is being rotated). Checking the raw bytes (not a re-serialized body), in
//! constant time, and only within five minutes of the stated timestamp keeps forged and replayed
//! deliveries out; the id is what the receiver deduplicates on.
//!
//! Only the header names differ between senders: Resend (through Svix) sends `svix-id`,
//! `svix-timestamp` and `svix-signature` ([`SVIX_HEADERS`], what [`verify`] reads), Loops the
//! specification's `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! ([`STANDARD_HEADERS`]); [`verify_with`] and [`verify_headers`] take either.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// How far the stated send time may be from the receiver's clock, either way: older deliveries
/// could be replays, later ones come from a sender whose clock cannot be trusted.
pub const TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(5 * 60);

/// How many `v1` entries are tried: one per secret the sender is rotating through.
const MAX_CANDIDATES: usize = 8;

/// Prefix of the secrets Svix, Resend and Loops hand out.
const SECRET_PREFIX: &str = "whsec_";

/// The shortest secret (decoded bytes) the Standard Webhooks specification allows: it asks
/// senders for 24 to 64 random bytes. [`SigningKey::parse_with_min`] refuses shorter ones, so a
/// truncated or hand-typed secret is a configuration error rather than a guessable key.
pub const STANDARD_MIN_SECRET_LEN: usize = 24;

/// The names of the three headers a sender puts the id, timestamp and signatures in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderNames {
    /// The message id (what receivers deduplicate on).
    pub id: &'static str,
    /// The send time, Unix seconds.
    pub timestamp: &'static str,
    /// The `v1,<base64>` entries.
    pub signature: &'static str,
}

/// Svix's names, which Resend uses.
pub const SVIX_HEADERS: HeaderNames = HeaderNames {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

/// The Standard Webhooks specification's names, which Loops uses.
pub const STANDARD_HEADERS: HeaderNames = HeaderNames {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

/// Why a secret or a signature was refused. The messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvixError {
    /// The signing secret is not `whsec_<base64>` (or bare base64), or decodes to nothing.
    #[error("signing secret is not base64 (expected whsec_<base64>)")]
    BadSecret,
    /// The signing secret decodes to fewer bytes than the receiver requires.
    #[error("signing secret is {len} bytes, shorter than the {min} required")]
    ShortSecret {
        /// Decoded length.
        len: usize,
        /// Required length.
        min: usize,
    },
    /// A header is empty or missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The timestamp header is not a Unix time in seconds.
    #[error("the signature timestamp is not a Unix time")]
    BadTimestamp,
    /// The stated send time is more than [`TOLERANCE`] away from now.
    #[error("the signature timestamp is {0} seconds away from now (tolerance 300)")]
    Stale(i64),
    /// The signature header holds no `v1` entry.
    #[error("the signature header has no v1 entry")]
    NoV1Signature,
    /// No `v1` entry matches the body.
    #[error("no signature matches")]
    Mismatch,
}

/// A decoded endpoint secret, ready to sign and verify with.
#[derive(Clone)]
pub struct SigningKey {
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key: it ends up in logs with the configuration.
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>`, or bare base64. Surrounding whitespace is ignored since the
    /// secret usually comes from a mounted file or an environment variable ending in a newline.
    /// Secrets that decode to fewer than [`STANDARD_MIN_SECRET_LEN`] bytes are refused: what Svix
    /// and Resend hand out is 24 bytes, and a shorter one is a typo or a placeholder that would let
    /// forged deliveries be guessed sooner.
    pub fn parse(secret: &str) -> Result<Self, SvixError> {
        Self::parse_with_min(secret, STANDARD_MIN_SECRET_LEN)
    }

    /// [`parse`](Self::parse), refusing secrets that decode to fewer than `min` bytes (see
    /// [`STANDARD_MIN_SECRET_LEN`]). The error says how long the secret was, never what it was.
    pub fn parse_with_min(secret: &str, min: usize) -> Result<Self, SvixError> {
        let secret = secret.trim();
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let bytes = STANDARD.decode(encoded).map_err(|_| SvixError::BadSecret)?;
        if bytes.is_empty() {
            return Err(SvixError::BadSecret);
        }
        if bytes.len() < min {
            return Err(SvixError::ShortSecret {
                len: bytes.len(),
                min,
            });
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// A key from raw bytes (what the base64 of a secret decodes to), of any length: for test
    /// vectors and fake senders. Configured secrets go through [`SigningKey::parse`], which
    /// refuses short ones.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    fn context(&self, id: &str, timestamp: &str, body: &[u8]) -> hmac::Context {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.as_bytes());
        context.update(b".");
        context.update(body);
        context
    }
}

/// The signature entry for `body` sent as message `id` at `timestamp` (Unix seconds, as sent):
/// `v1,<base64>`, whichever header it travels in. Used by tests and fake senders.
pub fn sign(key: &SigningKey, id: &str, timestamp: &str, body: &[u8]) -> String {
    let tag = key.context(id, timestamp, body).sign();
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

/// Checks that one of the `v1` entries in `signatures` is `key`'s signature of `body` as message
/// `id` sent at `timestamp`, and that `timestamp` is within [`TOLERANCE`] of `now`. Entries of
/// other versions, and entries that are not base64, are skipped: a sender may add schemes this
/// receiver does not know. Errors name Svix's headers ([`SVIX_HEADERS`]).
pub fn verify(
    key: &SigningKey,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<(), SvixError> {
    verify_with(&SVIX_HEADERS, key, id, timestamp, signatures, body, now)
}

/// Reads the three values from `headers` under `names` and checks them as [`verify_with`] does;
/// returns the message id, which the receiver deduplicates on. A header that is absent or not
/// text counts as missing.
pub fn verify_headers(
    names: &HeaderNames,
    key: &SigningKey,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<String, SvixError> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let id = get(names.id);
    verify_with(
        names,
        key,
        id,
        get(names.timestamp),
        get(names.signature),
        body,
        now,
    )?;
    Ok(id.trim().to_owned())
}

/// [`verify`] for a sender using `names`: only the names in its errors differ.
pub fn verify_with(
    names: &HeaderNames,
    key: &SigningKey,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<(), SvixError> {
    let id = id.trim();
    let timestamp = timestamp.trim();
    if id.is_empty() {
        return Err(SvixError::Missing(names.id));
    }
    if timestamp.is_empty() {
        return Err(SvixError::Missing(names.timestamp));
    }
    if signatures.trim().is_empty() {
        return Err(SvixError::Missing(names.signature));
    }
    let seconds: i64 = timestamp.parse().map_err(|_| SvixError::BadTimestamp)?;
    let offset = seconds.saturating_sub(now.as_second());
    if offset.unsigned_abs() > TOLERANCE.as_secs().unsigned_abs() {
        return Err(SvixError::Stale(offset));
    }
    let mut candidates = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .peekable();
    if candidates.peek().is_none() {
        return Err(SvixError::NoV1Signature);
    }
    let mut message = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    message.extend_from_slice(id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    // `hmac::verify` compares in constant time. Each candidate costs a MAC over the body, so a
    // header stuffed with entries is cut off at a few (senders list one per active secret).
    for candidate in candidates.take(MAX_CANDIDATES) {
        let Ok(candidate) = STANDARD.decode(candidate) else {
            continue;
        };
        if hmac::verify(&key.key, &message, &candidate).is_ok() {
            return Ok(());
        }
    }
    Err(SvixError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and Svix documentation (cross-checked
    /// with `openssl dgst -sha256 -mac HMAC`).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: &str = "1614265330";
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    fn spec_key() -> SigningKey {
        SigningKey::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn the_published_example_signs_and_verifies() {
        let key = spec_key();
        assert_eq!(
            sign(&key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        let now = at(1_614_265_330);
        verify(
            &key,
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_SIGNATURE,
            SPEC_BODY,
            now,
        )
        .unwrap();
    }

    #[test]
    fn a_vector_computed_from_the_definition() {
        // HMAC-SHA256(key = b"secret", "id.1.{}"), base64: computed independently with
        // `printf 'id.1.{}' | openssl dgst -sha256 -hmac secret -binary | base64`.
        let key = SigningKey::from_bytes(b"secret");
        assert_eq!(
            sign(&key, "id", "1", b"{}"),
            "v1,490pAcC1LQ1k1cOcmH0da199+A88OKCj0Io4WnJlp68="
        );
    }

    #[test]
    fn secrets_parse_with_or_without_prefix_and_trailing_newline() {
        let bare = SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(
            sign(&bare, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        let padded = SigningKey::parse("  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\r\n").unwrap();
        assert_eq!(
            sign(&padded, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        for bad in ["", "whsec_", "whsec_not base64!", "   "] {
            assert_eq!(
                SigningKey::parse(bad).unwrap_err(),
                SvixError::BadSecret,
                "{bad:?}"
            );
        }
        // "secret" and 23 bytes: refused, naming the length; 24 bytes: accepted.
        assert_eq!(
            SigningKey::parse("whsec_c2VjcmV0").unwrap_err(),
            SvixError::ShortSecret { len: 6, min: 24 }
        );
        let short = STANDARD.encode([7u8; 23]);
        assert_eq!(
            SigningKey::parse(&short).unwrap_err(),
            SvixError::ShortSecret { len: 23, min: 24 }
        );
        assert!(SigningKey::parse(&STANDARD.encode([7u8; 24])).is_ok());
        assert_eq!(format!("{:?}", spec_key()), "SigningKey(..)");
    }

    #[test]
    fn any_matching_v1_entry_is_accepted_and_other_versions_ignored() {
        let key = spec_key();
        let now = at(1_614_265_330);
        let other = SigningKey::from_bytes(b"secret");
        let wrong = sign(&other, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let header = format!("v2,abc {wrong} v1,!!notbase64 {SPEC_SIGNATURE}");
        verify(&key, SPEC_ID, SPEC_TIMESTAMP, &header, SPEC_BODY, now).unwrap();
        assert_eq!(
            verify(&key, SPEC_ID, SPEC_TIMESTAMP, &wrong, SPEC_BODY, now),
            Err(SvixError::Mismatch)
        );
        assert_eq!(
            verify(
                &key,
                SPEC_ID,
                SPEC_TIMESTAMP,
                "v1a,xyz v2,abc",
                SPEC_BODY,
                now
            ),
            Err(SvixError::NoV1Signature)
        );
    }

    #[test]
    fn any_change_to_id_timestamp_or_body_breaks_the_signature() {
        let key = spec_key();
        let now = at(1_614_265_330);
        let check =
            |id: &str, ts: &str, body: &[u8]| verify(&key, id, ts, SPEC_SIGNATURE, body, now);
        assert_eq!(
            check("msg_other", SPEC_TIMESTAMP, SPEC_BODY),
            Err(SvixError::Mismatch)
        );
        assert_eq!(
            check(SPEC_ID, "1614265331", SPEC_BODY),
            Err(SvixError::Mismatch)
        );
        assert_eq!(
            check(SPEC_ID, SPEC_TIMESTAMP, br#"{"test":2432232314}"#),
            Err(SvixError::Mismatch)
        );
        assert_eq!(
            check(SPEC_ID, SPEC_TIMESTAMP, b""),
            Err(SvixError::Mismatch)
        );
    }

    #[test]
    fn timestamps_beyond_five_minutes_either_way_are_refused() {
        let key = spec_key();
        let sent = 1_614_265_330;
        let check = |now: i64| {
            verify(
                &key,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_SIGNATURE,
                SPEC_BODY,
                at(now),
            )
        };
        check(sent + 300).unwrap();
        check(sent - 300).unwrap();
        assert_eq!(check(sent + 301), Err(SvixError::Stale(-301)));
        assert_eq!(check(sent - 301), Err(SvixError::Stale(301)));
        assert_eq!(check(sent + 360), Err(SvixError::Stale(-360)));
    }

    #[test]
    fn missing_and_garbled_headers_are_errors() {
        let key = spec_key();
        let now = at(1_614_265_330);
        let check = |id: &str, ts: &str, sig: &str| verify(&key, id, ts, sig, SPEC_BODY, now);
        assert_eq!(
            check("", SPEC_TIMESTAMP, SPEC_SIGNATURE),
            Err(SvixError::Missing("svix-id"))
        );
        assert_eq!(
            check(SPEC_ID, " ", SPEC_SIGNATURE),
            Err(SvixError::Missing("svix-timestamp"))
        );
        assert_eq!(
            check(SPEC_ID, SPEC_TIMESTAMP, ""),
            Err(SvixError::Missing("svix-signature"))
        );
        for ts in ["soon", "1614265330.5", "-", "99999999999999999999999"] {
            assert_eq!(
                check(SPEC_ID, ts, SPEC_SIGNATURE),
                Err(SvixError::BadTimestamp),
                "{ts}"
            );
        }
        // Extreme but parseable timestamps must not overflow.
        assert!(matches!(
            check(SPEC_ID, &i64::MIN.to_string(), SPEC_SIGNATURE),
            Err(SvixError::Stale(_))
        ));
        assert!(matches!(
            check(SPEC_ID, &i64::MAX.to_string(), SPEC_SIGNATURE),
            Err(SvixError::Stale(_))
        ));
    }

    #[test]
    fn short_secrets_are_refused_when_a_minimum_is_asked() {
        // 23 and 24 bytes of zeros.
        let short = format!("whsec_{}", STANDARD.encode([0u8; 23]));
        let enough = format!("whsec_{}", STANDARD.encode([0u8; 24]));
        assert_eq!(
            SigningKey::parse_with_min(&short, STANDARD_MIN_SECRET_LEN).unwrap_err(),
            SvixError::ShortSecret { len: 23, min: 24 }
        );
        SigningKey::parse_with_min(&enough, STANDARD_MIN_SECRET_LEN).unwrap();
        // Resend's keys are held to the same minimum.
        assert!(SigningKey::parse(&short).is_err());
        let message = SvixError::ShortSecret { len: 23, min: 24 }.to_string();
        assert!(!message.contains("AAAA"), "{message}");
    }

    #[test]
    fn header_names_are_the_senders_own() {
        let key = spec_key();
        let now = at(1_614_265_330);
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", SPEC_ID.parse().unwrap());
        headers.insert("webhook-timestamp", SPEC_TIMESTAMP.parse().unwrap());
        headers.insert("webhook-signature", SPEC_SIGNATURE.parse().unwrap());
        assert_eq!(
            verify_headers(&STANDARD_HEADERS, &key, &headers, SPEC_BODY, now).unwrap(),
            SPEC_ID
        );
        // The same delivery read with Svix's names finds nothing.
        assert_eq!(
            verify_headers(&SVIX_HEADERS, &key, &headers, SPEC_BODY, now),
            Err(SvixError::Missing("svix-id"))
        );
        headers.remove("webhook-signature");
        assert_eq!(
            verify_headers(&STANDARD_HEADERS, &key, &headers, SPEC_BODY, now),
            Err(SvixError::Missing("webhook-signature"))
        );
        assert_eq!(
            verify_with(&STANDARD_HEADERS, &key, "", "1", "v1,x", b"", now),
            Err(SvixError::Missing("webhook-id"))
        );
    }
}
