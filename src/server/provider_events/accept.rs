//! What each path checks before anything acts on a delivery: the provider's signature scheme
//! under its own header names and key, then its event format. Resend signs with Svix's headers
//! (`svix-id`, `svix-timestamp`, `svix-signature`), Loops with the Standard Webhooks ones
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`); both are checked over the raw body,
//! in constant time, within five minutes (see [`crate::providers::svix`]).

use axum::http::HeaderMap;

use super::seen::Provider;
use crate::providers::loops::events::{self as loops_events, LoopsEvent, LoopsSigningKey};
use crate::providers::resend::events::{ResendEvent, parse_event};
use crate::providers::svix::{self, SVIX_HEADERS, SigningKey};

/// Which path a delivery came in on.
#[derive(Clone, Copy, Debug)]
pub(super) enum Path {
    /// Resend's contact events.
    Contacts,
    /// Resend's email events.
    Emails,
    /// Loops' contact and mailing list events.
    Loops,
}

impl Path {
    /// Whose deliveries come in on this path.
    pub(super) fn provider(self) -> Provider {
        match self {
            Path::Contacts | Path::Emails => Provider::Resend,
            Path::Loops => Provider::Loops,
        }
    }
}

/// The keys deliveries are checked with, per path.
#[derive(Clone, Debug, Default)]
pub(super) struct Keys {
    pub(super) contacts: Option<SigningKey>,
    pub(super) emails: Option<SigningKey>,
    pub(super) loops: Option<LoopsSigningKey>,
}

/// A parsed event of either provider.
pub(super) enum Incoming {
    Resend(ResendEvent),
    Loops(LoopsEvent),
}

impl Incoming {
    /// The event's type, as the sender names it.
    pub(super) fn type_(&self) -> &str {
        match self {
            Incoming::Resend(event) => event.type_(),
            Incoming::Loops(event) => event.event_name(),
        }
    }
}

/// A delivery whose signature held and whose body parsed.
pub(super) struct Accepted {
    /// The delivery id (trimmed, as the signature check reads it): what is deduplicated on.
    pub(super) id: String,
    pub(super) event: Incoming,
}

/// Why a delivery was refused before any sink saw it.
#[derive(Debug)]
pub(super) enum Refused {
    /// No key is configured for the path (503: the sender retries until one is).
    NoKey,
    /// Unsigned, forged, altered or stale (401).
    Signature(String),
    /// Signed, but not an event of the provider's (400).
    Malformed(String),
}

/// Checks a delivery on `path` against `keys` at `now`, then parses it.
pub(super) fn accept(
    keys: &Keys,
    path: Path,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<Accepted, Refused> {
    match path {
        Path::Contacts | Path::Emails => {
            let key = match path {
                Path::Contacts => keys.contacts.as_ref(),
                _ => keys.emails.as_ref(),
            };
            let key = key.ok_or(Refused::NoKey)?;
            let id = svix::verify_headers(&SVIX_HEADERS, key, headers, body, now)
                .map_err(|e| Refused::Signature(e.to_string()))?;
            let event = parse_event(body).map_err(|e| Refused::Malformed(e.to_string()))?;
            Ok(Accepted {
                id,
                event: Incoming::Resend(event),
            })
        }
        Path::Loops => {
            let key = keys.loops.as_ref().ok_or(Refused::NoKey)?;
            match loops_events::receive(key, headers, body, now) {
                Ok(delivery) => Ok(Accepted {
                    id: delivery.id,
                    event: Incoming::Loops(delivery.event),
                }),
                Err(loops_events::ReceiveError::Signature(e)) => {
                    Err(Refused::Signature(e.to_string()))
                }
                Err(loops_events::ReceiveError::Event(e)) => Err(Refused::Malformed(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU=";

    fn headers(names: &svix::HeaderNames, id: &str, ts: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(names.id, id.parse().unwrap());
        h.insert(names.timestamp, ts.parse().unwrap());
        h.insert(names.signature, signature.parse().unwrap());
        h
    }

    #[test]
    fn each_path_takes_its_providers_headers_and_key_only() {
        let now = jiff::Timestamp::from_second(1_734_425_918).unwrap();
        let ts = "1734425918";
        let body = br#"{"eventName":"testing.testEvent"}"#;
        let loops = LoopsSigningKey::parse(SECRET).unwrap();
        let resend = SigningKey::parse(SECRET).unwrap();
        let signature = loops.sign("msg_1", ts, body);
        let keys = Keys {
            contacts: Some(resend.clone()),
            emails: None,
            loops: Some(loops),
        };
        let standard = headers(&svix::STANDARD_HEADERS, " msg_1", ts, &signature);
        let accepted = accept(&keys, Path::Loops, &standard, body, now).unwrap();
        assert_eq!(accepted.id, "msg_1", "trimmed");
        assert_eq!(accepted.event.type_(), "testing.testEvent");
        // The same signature under Svix's names is not a Loops delivery...
        let svix_names = headers(&SVIX_HEADERS, "msg_1", ts, &signature);
        assert!(matches!(
            accept(&keys, Path::Loops, &svix_names, body, now),
            Err(Refused::Signature(_))
        ));
        // ...and on Resend's path the Loops body is no Resend event.
        assert!(matches!(
            accept(&keys, Path::Contacts, &svix_names, body, now),
            Err(Refused::Malformed(_))
        ));
        assert!(matches!(
            accept(&keys, Path::Emails, &svix_names, body, now),
            Err(Refused::NoKey)
        ));
        let keys = Keys {
            loops: None,
            ..keys
        };
        assert!(matches!(
            accept(&keys, Path::Loops, &standard, body, now),
            Err(Refused::NoKey)
        ));
    }
}
