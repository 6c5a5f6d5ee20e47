//! A Resend answer that is neither a 429 nor a 5xx (those the client handles itself): read by the
//! caller, which knows whether a 404 or a conflict means an error for its call.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::client::ResendError;
use super::types::ErrorBody;

/// A non-429, non-5xx answer, to be read by the caller.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, ResendError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ResendError::transient(format!("unexpected answer from Resend: {e}")))
    }

    pub(super) fn error_body(&self) -> ErrorBody {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| ErrorBody {
            name: String::new(),
            message: String::from_utf8_lossy(&self.body)
                .chars()
                .take(200)
                .collect(),
        })
    }

    /// The error for a 4xx answer the caller did not expect.
    pub(super) fn into_error(self) -> ResendError {
        if self.status == StatusCode::NOT_FOUND {
            return ResendError::NotFound;
        }
        let ErrorBody { name, message } = self.error_body();
        match name.as_str() {
            // Someone else is changing the resource or the same request is in flight: soon fine.
            "resource_locked" | "concurrent_idempotent_requests" => {
                ResendError::transient(format!("{} {name}: {message}", self.status.as_u16()))
            }
            _ => ResendError::Invalid {
                status: self.status.as_u16(),
                name,
                message,
            },
        }
    }

    pub(super) fn into_result(self) -> Result<Self, ResendError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    /// 2xx -> true, 404 -> false, anything else an error.
    pub(super) fn existed(self) -> Result<bool, ResendError> {
        match self.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.into_error()),
        }
    }

    /// A 409/422 saying the thing already exists (Resend's wording is undocumented).
    pub(super) fn says_already_exists(&self) -> bool {
        if !matches!(
            self.status,
            StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY
        ) {
            return false;
        }
        let body = self.error_body();
        let text = format!("{} {}", body.name, body.message).to_ascii_lowercase();
        text.contains("already exist") || text.contains("already_exist")
    }
}
