//! A final answer: its body read within the client's limits, and the response rebuilt
//! around it with the runtime's stamps (attempts, operation, correlation id, the wait of a
//! final 429, the service's message) for `Error::from`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use progenitor_client::ClientInfo;
use reqwest::header::{CONTENT_LENGTH, HeaderName, HeaderValue};

use super::{
    ATTEMPTS_HEADER, CORRELATION_HEADER, MESSAGE_HEADER, OPERATION_HEADER, RETRY_AFTER_MS_HEADER,
};
use crate::Client;
use crate::error::{Error, ErrorMeta};

impl Client {
    /// Reads a final answer's body within its limit and rebuilds the response around it,
    /// stamped for `Error::from`.
    pub(super) async fn answer(
        &self,
        mut response: reqwest::Response,
        attempts: u32,
        stamp: Stamp<'_>,
        retry_after: Option<Duration>,
    ) -> std::result::Result<reqwest::Response, AnswerFailure> {
        let shared = &self.inner().shared;
        let status = response.status();
        let is_error = status.is_client_error() || status.is_server_error();
        let limit = if is_error {
            shared.limits.error
        } else {
            shared.limits.success
        };
        let meta = || {
            ErrorMeta::new(stamp.correlation.map(str::to_string), attempts)
                .with_operation(stamp.operation)
        };
        let body = match read_capped(&mut response, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(AnswerFailure::Final(Error::ResponseTooLarge {
                    status: status.as_u16(),
                    limit,
                    meta: meta(),
                }));
            }
            Err(BodyError::Read(e)) => return Err(AnswerFailure::Read(e)),
        };
        let mut rebuilt = http::Response::new(Bytes::new());
        *rebuilt.status_mut() = status;
        *rebuilt.version_mut() = response.version();
        *rebuilt.headers_mut() = std::mem::take(response.headers_mut());
        *rebuilt.body_mut() = if is_error {
            error_body(rebuilt.headers_mut(), body)
        } else {
            body
        };
        let headers = rebuilt.headers_mut();
        headers.remove(CONTENT_LENGTH);
        headers.insert(HeaderName::from_static(ATTEMPTS_HEADER), attempts.into());
        headers.insert(
            HeaderName::from_static(OPERATION_HEADER),
            HeaderValue::from_static(stamp.operation),
        );
        if let Some(value) = stamp
            .correlation
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
        }
        if let Some(wait) = retry_after {
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert(
                HeaderName::from_static(RETRY_AFTER_MS_HEADER),
                millis.into(),
            );
        }
        Ok(reqwest::Response::from(rebuilt))
    }
}

/// What the runtime stamps on a final answer.
#[derive(Clone, Copy)]
pub(super) struct Stamp<'a> {
    pub(super) operation: &'static str,
    pub(super) correlation: Option<&'a str>,
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// Why a final answer could not be handed over.
pub(super) enum AnswerFailure {
    /// For good (a body over its limit).
    Final(Error),
    /// The body broke off while it was read.
    Read(reqwest::Error),
}

/// Reads the body, refusing a declared `Content-Length` above `limit` before reading and
/// stopping as soon as the streamed bytes pass it: at most `limit` bytes are held.
async fn read_capped(
    response: &mut reqwest::Response,
    limit: u64,
) -> std::result::Result<Bytes, BodyError> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let reserve = declared.unwrap_or(0).min(limit).min(1 << 20);
    let mut body = BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        let total = u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX);
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// An error answer's body as the generated code gets it: a body that is not a JSON object
/// (an HTML proxy page, an empty 404) becomes `{}` so that the status still maps to its
/// error, and the service's `message` is copied into a header for statuses the description
/// does not declare.
fn error_body(headers: &mut reqwest::header::HeaderMap, body: Bytes) -> Bytes {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|m| m.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.chars().take(512).collect::<String>());
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) =
        message.and_then(|m| HeaderValue::from_bytes(m.replace(['\r', '\n'], " ").as_bytes()).ok())
    {
        headers.insert(HeaderName::from_static(MESSAGE_HEADER), value);
    }
    if parsed.is_some() {
        body
    } else {
        Bytes::from_static(b"{}")
    }
}
