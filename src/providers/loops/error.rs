//! How a Loops call fails, and how Loops' answers are read into that.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

/// Why a Loops call failed, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopsError {
    /// 404 where the caller must know (a delete of a missing contact is not an error).
    #[error("not found in Loops")]
    NotFound,
    /// The API key is missing, wrong or revoked (401/403): nothing works until it is replaced.
    #[error("Loops refused the API key ({status}): {message}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// Loops' explanation.
        message: String,
    },
    /// 409: the email (or `userId`) belongs to another contact. Retrying the same request cannot
    /// help until one of the two contacts changes.
    #[error("Loops conflict: {message}")]
    Conflict {
        /// Loops' explanation.
        message: String,
    },
    /// Still rate limited after the client's own bounded retries.
    #[error("Loops rate limit exceeded; retry in {retry_in:?}")]
    RateLimited {
        /// The last pause Loops asked for.
        retry_in: Duration,
    },
    /// Refused for what was sent (400, 405, 422, ...): retrying the same request cannot help.
    /// `status` is 0 when the client itself refused (bad configuration or arguments).
    #[error("Loops refused the request ({status}): {message}")]
    Invalid {
        /// HTTP status, 0 for the client's own refusal.
        status: u16,
        /// Loops' (or the client's) explanation.
        message: String,
    },
    /// Loops was unavailable, slow or answered something unreadable: retry with backoff.
    #[error("Loops unavailable: {message}")]
    Transient {
        /// What happened, for logs and conditions.
        message: String,
    },
}

impl LoopsError {
    /// How long to wait before retrying, when Loops said so.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_in } => Some(*retry_in),
            _ => None,
        }
    }

    /// True when retrying the same request cannot succeed until something else changes (the
    /// key, the request, or the contact holding an email).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::Conflict { .. } | Self::Invalid { .. }
        )
    }

    /// True when the same request may succeed later: rate limits and unavailability.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. })
    }

    /// The condition reason a controller reports for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::Unauthorized { .. } => "InvalidApiKey",
            Self::Conflict { .. } => "Conflict",
            Self::RateLimited { .. } => "RateLimited",
            Self::Invalid { .. } => "Invalid",
            Self::Transient { .. } => "ProviderUnavailable",
        }
    }

    pub(super) fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
        }
    }

    pub(super) fn refused(message: impl Into<String>) -> Self {
        Self::Invalid {
            status: 0,
            message: message.into(),
        }
    }
}
/// A non-429 answer that is not a server error, read by the call that sent it.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, LoopsError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| LoopsError::transient(format!("unexpected answer from Loops: {e}")))
    }

    /// The error for an answer the call did not expect.
    pub(super) fn into_error(self) -> LoopsError {
        let message = error_message(&self.body);
        match self.status {
            StatusCode::NOT_FOUND => LoopsError::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LoopsError::Unauthorized {
                status: self.status.as_u16(),
                message,
            },
            StatusCode::CONFLICT => LoopsError::Conflict { message },
            status => LoopsError::Invalid {
                status: status.as_u16(),
                message,
            },
        }
    }

    pub(super) fn into_result(self) -> Result<Self, LoopsError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
}
/// Loops' explanation in an error body: `{"success": false, "message"}`, or `{"error": "..."}`
/// for a bad key; else the start of the body.
pub(super) fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |v: &serde_json::Value| {
        v.get("message")
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str().or_else(|| m.get("message")?.as_str()))
            .map(str::to_owned)
    };
    parsed
        .as_ref()
        .and_then(field)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let conflict = LoopsError::Conflict {
            message: "Email already in use".into(),
        };
        assert!(conflict.is_permanent() && !conflict.is_retryable());
        assert_eq!(conflict.reason(), "Conflict");
        let limited = LoopsError::RateLimited {
            retry_in: Duration::from_secs(2),
        };
        assert!(limited.is_retryable() && !limited.is_permanent());
        assert_eq!(limited.retry_in(), Some(Duration::from_secs(2)));
        let key = LoopsError::Unauthorized {
            status: 401,
            message: "Invalid API key".into(),
        };
        assert_eq!((key.reason(), key.is_permanent()), ("InvalidApiKey", true));
        assert!(!LoopsError::NotFound.is_permanent() && !LoopsError::NotFound.is_retryable());
    }

    #[test]
    fn error_bodies_in_each_of_loops_shapes() {
        assert_eq!(
            error_message(br#"{"success":false,"message":"Contact not found."}"#),
            "Contact not found."
        );
        assert_eq!(
            error_message(br#"{"error":"Invalid API key"}"#),
            "Invalid API key"
        );
        assert_eq!(
            error_message(br#"{"error":{"path":"x","message":"nested"}}"#),
            "nested"
        );
        assert_eq!(error_message(b"<html>bad gateway"), "<html>bad gateway");
        assert_eq!(error_message(&[b'x'; 500]).len(), 200);
    }
}
