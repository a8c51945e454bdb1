//! The error answer of the service layer and its classification of engine errors.

use serde::Serialize;

use crate::engine::SyncError;
use crate::store::StoreError;
use crate::webhook::Rejection;

/// An error answer: an HTTP status and a JSON body `{"error": code, "message": message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// A stable machine-readable code (`not_found`, `keycrm_unavailable`...).
    pub error: &'static str,
    /// For people (never customer data or secrets).
    pub message: String,
}

impl HttpError {
    /// An error with a status, a code and a message.
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    /// The HTTP classification of an engine error:
    ///
    /// | error | status | code |
    /// |---|---|---|
    /// | `NotFound` | 404 | `not_found` |
    /// | KeyCRM 429, 5xx, timeout, transport | 503 | `keycrm_unavailable` |
    /// | KeyCRM 422 | 422 | `keycrm_rejected` |
    /// | KeyCRM 401/403 (our key) | 502 | `keycrm_auth` |
    /// | other KeyCRM errors, unusable answers | 502 | `keycrm_error` |
    /// | store backend | 503 | `store_unavailable` |
    /// | store corrupt or newer schema | 500 | `store_error` |
    /// | host | 500 | `host_error` |
    /// | mapping | 422 | `mapping` |
    /// | mass-zeroing guard | 409 | `mass_zeroing` |
    /// | configuration | 500 | `config` |
    pub fn from_sync(error: &SyncError) -> Self {
        let (status, code) = match error {
            SyncError::NotFound { .. } => (404, "not_found"),
            SyncError::Api(e) => match e {
                keycrm_api::Error::RateLimited { .. }
                | keycrm_api::Error::Server { .. }
                | keycrm_api::Error::Timeout { .. }
                | keycrm_api::Error::Transport { .. }
                | keycrm_api::Error::DeadlineExceeded { .. } => (503, "keycrm_unavailable"),
                keycrm_api::Error::Validation { .. } => (422, "keycrm_rejected"),
                keycrm_api::Error::Unauthorized { .. } | keycrm_api::Error::Forbidden { .. } => {
                    (502, "keycrm_auth")
                }
                _ => (502, "keycrm_error"),
            },
            SyncError::Answer { .. } => (502, "keycrm_error"),
            SyncError::Store(StoreError::Backend(_)) => (503, "store_unavailable"),
            SyncError::Store(_) => (500, "store_error"),
            SyncError::Host(_) => (500, "host_error"),
            SyncError::Mapping(_) => (422, "mapping"),
            SyncError::MassZeroing { .. } => (409, "mass_zeroing"),
            SyncError::Config(_) => (500, "config"),
            SyncError::Webhook(_) => (400, "invalid_webhook"),
        };
        Self::new(status, code, error.to_string())
    }

    /// The answer to a rejected webhook delivery.
    pub fn from_rejection(rejection: &Rejection) -> Self {
        let code = match rejection {
            Rejection::Unauthorized => "unauthorized",
            Rejection::BadSignature => "bad_signature",
            Rejection::TooLarge(_) => "payload_too_large",
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::Invalid(_) => "invalid_webhook",
            Rejection::Unavailable(_) => "unavailable",
        };
        Self::new(rejection.status(), code, rejection.to_string())
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.error, "message": self.message})
    }
}

impl From<SyncError> for HttpError {
    fn from(error: SyncError) -> Self {
        Self::from_sync(&error)
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        Self::from_sync(&SyncError::Store(error))
    }
}
