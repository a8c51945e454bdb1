//! The client's error type.
//!
//! Every failure of a KeyCRM call becomes one [`Error`]. Its `Display` says what happened and
//! what to do, and never prints the API key, a request or response body, or customer data:
//! at most the service's own `message` and the names of the fields it rejected.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::limiter::WaitPhase;
use crate::types;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Context every request error carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorMeta {
    /// The `X-Correlation-ID` sent with the request, when correlation ids are enabled.
    pub correlation_id: Option<String>,
    /// How many times the request was sent (0 when it never left the client).
    pub attempts: u32,
    /// The operation (`order_list`, `buyer_update`, ...), when known.
    pub operation: Option<String>,
}

impl ErrorMeta {
    /// Metadata for a request sent `attempts` times.
    pub fn new(correlation_id: Option<String>, attempts: u32) -> Self {
        Self {
            correlation_id,
            attempts,
            operation: None,
        }
    }

    /// The same metadata naming the operation.
    pub fn with_operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }
}

/// ` [`order_list`, 3 attempts]`: the operation and the attempts, for one-line messages of
/// failures that have no HTTP status to speak for them.
struct Ctx<'a>(&'a ErrorMeta);

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(" [")?;
        if let Some(op) = &self.0.operation {
            write!(f, "`{op}`, ")?;
        }
        match self.0.attempts {
            0 => f.write_str("nothing sent]"),
            1 => f.write_str("1 attempt]"),
            n => write!(f, "{n} attempts]"),
        }
    }
}

/// An error from a KeyCRM call or from configuring the client.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 422: KeyCRM rejected the input. `errors` maps each field path (`orders.0.source_id`)
    /// to the service's messages for it.
    #[error("KeyCRM rejected the request (422): {message}{}", FieldList(errors))]
    Validation {
        /// The service's summary message.
        message: String,
        /// Field path to messages.
        errors: BTreeMap<String, Vec<String>>,
        /// Request context.
        meta: ErrorMeta,
    },
    /// 401: the API key is missing, wrong or revoked.
    #[error(
        "KeyCRM refused the API key (401); check KEYCRM_API_KEY or the key given to the builder"
    )]
    Unauthorized {
        /// The service's message, if any.
        message: Option<String>,
        /// Request context.
        meta: ErrorMeta,
    },
    /// 403: the account may not do this (for example the pipelines module is not active).
    #[error("KeyCRM forbids this operation (403){}", Msg(message))]
    Forbidden {
        /// The service's message, if any.
        message: Option<String>,
        /// Request context.
        meta: ErrorMeta,
    },
    /// 404: no record has this id (or the route does not exist).
    #[error("KeyCRM has no such record (404){}", Msg(message))]
    NotFound {
        /// The service's message, if any.
        message: Option<String>,
        /// Request context.
        meta: ErrorMeta,
    },
    /// 413, or a body the client refused to send because it exceeds a documented limit.
    #[error("the request body is too large: {message}")]
    PayloadTooLarge {
        /// What was too large and what the limit is.
        message: String,
        /// Request context.
        meta: ErrorMeta,
    },
    /// 429: the per-key request quota is exhausted and retries did not get through.
    #[error("KeyCRM's request quota is exhausted (429){}", RetryAfter(retry_after))]
    RateLimited {
        /// How long the service asked to wait, when it said so.
        retry_after: Option<Duration>,
        /// Request context.
        meta: ErrorMeta,
    },
    /// 5xx: the service failed and retries did not help.
    #[error("KeyCRM failed with HTTP {status}; try again later")]
    Server {
        /// The HTTP status code.
        status: u16,
        /// Request context.
        meta: ErrorMeta,
    },
    /// Any other 4xx, for example 400 "Leads are not enabled" or an unknown `include`.
    #[error("KeyCRM refused the request (HTTP {status}){}", Msg(message))]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The service's message, if any.
        message: Option<String>,
        /// Request context.
        meta: ErrorMeta,
    },
    /// One attempt ran out of the per-attempt timeout (builder `timeout`/`connect_timeout`).
    /// For a create, the record may exist anyway.
    #[error("the request to KeyCRM timed out{}", Ctx(meta))]
    Timeout {
        /// Request context.
        meta: ErrorMeta,
    },
    /// The connection failed (refused, reset, closed early, TLS, DNS).
    #[error("could not talk to KeyCRM: {message}{}", Ctx(meta))]
    Transport {
        /// What failed, with the URL (which can carry filter values) removed.
        message: String,
        /// Request context.
        meta: ErrorMeta,
    },
    /// The call's deadline (builder `deadline`, or [`Client::with_deadline`]) ran out; `phase`
    /// says what the call was doing then. For a create, the record may exist anyway when
    /// the phase is [`WaitPhase::Request`].
    ///
    /// [`Client::with_deadline`]: crate::Client::with_deadline
    #[error("the call ran out of its {} s deadline while {phase}{}", deadline.as_secs_f64(), Ctx(meta))]
    DeadlineExceeded {
        /// The deadline of the call.
        deadline: Duration,
        /// What the call was waiting for when the deadline ran out.
        phase: WaitPhase,
        /// Request context.
        meta: ErrorMeta,
    },
    /// KeyCRM's answer is larger than the client reads (builder `max_response_bytes` for
    /// successful answers, `max_error_body_bytes` for error answers). Reading stopped at the
    /// limit.
    #[error(
        "KeyCRM's answer (HTTP {status}) exceeds the limit of {limit} bytes{}",
        Ctx(meta)
    )]
    ResponseTooLarge {
        /// The HTTP status of the answer.
        status: u16,
        /// The limit that was exceeded, in bytes.
        limit: u64,
        /// Request context.
        meta: ErrorMeta,
    },
    /// A response did not match the expected shape. `path` names the field (`data[3].grand_total`).
    #[error("cannot read KeyCRM's response at `{path}`: {message}")]
    Decode {
        /// JSON path of the offending value.
        path: String,
        /// What was wrong, without the value itself.
        message: String,
        /// Request context.
        meta: ErrorMeta,
    },
    /// A list stream asked for a page and the service answered another one (or repeated the
    /// previous page), so following it would loop.
    #[error("KeyCRM did not advance to page {requested} (it answered page {})", received.map_or("?".to_string(), |p| p.to_string()))]
    PageNotAdvancing {
        /// The page asked for.
        requested: u64,
        /// The page the service said it returned.
        received: Option<i64>,
    },
    /// The request could not be built from the given input (nothing was sent).
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong with the input.
        message: String,
    },
    /// The client configuration is not usable (empty key, bad URL, missing environment variable).
    #[error("invalid KeyCRM client configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Error {
    /// The HTTP status of a response error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Validation { .. } => Some(422),
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::PayloadTooLarge { meta, .. } => (meta.attempts > 0).then_some(413),
            Error::RateLimited { .. } => Some(429),
            Error::Server { status, .. } | Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Request context (correlation id, attempts), for errors that come from a request.
    pub fn meta(&self) -> Option<&ErrorMeta> {
        match self {
            Error::Validation { meta, .. }
            | Error::Unauthorized { meta, .. }
            | Error::Forbidden { meta, .. }
            | Error::NotFound { meta, .. }
            | Error::PayloadTooLarge { meta, .. }
            | Error::RateLimited { meta, .. }
            | Error::Server { meta, .. }
            | Error::Api { meta, .. }
            | Error::Timeout { meta }
            | Error::Transport { meta, .. }
            | Error::DeadlineExceeded { meta, .. }
            | Error::ResponseTooLarge { meta, .. }
            | Error::Decode { meta, .. } => Some(meta),
            Error::InvalidRequest { .. }
            | Error::Config { .. }
            | Error::PageNotAdvancing { .. } => None,
        }
    }

    /// The correlation id sent with the failed request, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.meta().and_then(|m| m.correlation_id.as_deref())
    }

    /// How many times the request was sent.
    pub fn attempts(&self) -> u32 {
        self.meta().map_or(0, |m| m.attempts)
    }

    /// The operation (`order_list`, ...) of the failed request, when known.
    pub fn operation(&self) -> Option<&str> {
        self.meta().and_then(|m| m.operation.as_deref())
    }

    /// Whether sending the same request again later may succeed (429, 5xx, timeouts, an
    /// exhausted deadline, connection failures). For non-idempotent creates see the retry
    /// notes in the README.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Server { .. }
                | Error::Timeout { .. }
                | Error::Transport { .. }
                | Error::DeadlineExceeded { .. }
        )
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// Maps an HTTP error status and the service's body (if any) to an error.
    pub(crate) fn from_status(
        status: u16,
        body: Option<types::Error>,
        retry_after: Option<Duration>,
        meta: ErrorMeta,
    ) -> Self {
        let message = body
            .as_ref()
            .and_then(|b| b.message.clone())
            .filter(|m| !m.is_empty());
        match status {
            401 => Error::Unauthorized { message, meta },
            403 => Error::Forbidden { message, meta },
            404 => Error::NotFound { message, meta },
            413 => Error::PayloadTooLarge {
                message: message.unwrap_or_else(|| "KeyCRM answered 413".to_string()),
                meta,
            },
            422 => Error::Validation {
                message: message.unwrap_or_else(|| "validation failed".to_string()),
                errors: body
                    .map(|b| b.errors.into_iter().collect())
                    .unwrap_or_default(),
                meta,
            },
            429 => Error::RateLimited { retry_after, meta },
            500..=599 => Error::Server { status, meta },
            _ => Error::Api {
                status,
                message,
                meta,
            },
        }
    }

    /// Builds a decode error from the response bytes and serde_json's error.
    pub(crate) fn decode(bytes: &[u8], err: &serde_json::Error, meta: ErrorMeta) -> Self {
        Error::Decode {
            path: json_path_at(bytes, err.line(), err.column()),
            message: redact_values(&err.to_string()),
            meta,
        }
    }
}

/// The error of the generated `send()` methods (progenitor's) becomes this crate's error.
///
/// A failure of the runtime (transport, timeout, deadline, body limit) travels through
/// progenitor as a `reqwest::Error` whose source is the finished [`Error`]; it comes back
/// out here unchanged, with its operation and attempts.
impl From<progenitor_client::Error<types::Error>> for Error {
    fn from(err: progenitor_client::Error<types::Error>) -> Self {
        use progenitor_client::Error as P;
        match err {
            P::InvalidRequest(message) | P::Custom(message) => Error::InvalidRequest { message },
            P::CommunicationError(e) | P::ResponseBodyError(e) | P::InvalidUpgrade(e) => {
                Error::from_reqwest(e, ErrorMeta::new(None, 1))
            }
            P::ErrorResponse(rv) => {
                let status = rv.status().as_u16();
                let meta = meta_from_headers(rv.headers());
                let retry_after = runtime_retry_after(rv.headers());
                Error::from_status(status, Some(rv.into_inner()), retry_after, meta)
            }
            P::InvalidResponsePayload(bytes, e) => {
                Error::decode(&bytes, &e, ErrorMeta::new(None, 1))
            }
            P::UnexpectedResponse(response) => {
                Error::from_response_head(response.status().as_u16(), response.headers())
            }
        }
    }
}

impl Error {
    /// Maps a response the generated code did not expect (its body already consumed by the
    /// runtime, which left the service's message in a header) to an error.
    pub(crate) fn from_response_head(status: u16, headers: &reqwest::header::HeaderMap) -> Self {
        use crate::runtime::MESSAGE_HEADER;
        let meta = meta_from_headers(headers);
        let body = headers.get(MESSAGE_HEADER).map(|v| types::Error {
            message: Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            errors: Default::default(),
        });
        Error::from_status(status, body, runtime_retry_after(headers), meta)
    }

    /// Maps a `reqwest::Error`: a runtime failure carried inside it comes out as it was;
    /// otherwise the error is classified, with `meta` as its context.
    pub(crate) fn from_reqwest(e: reqwest::Error, meta: ErrorMeta) -> Self {
        if let Some(carried) = Failure::find(&e) {
            return carried.clone();
        }
        if e.is_builder() {
            return Error::InvalidRequest {
                message: format!("the request could not be built: {}", describe_reqwest(&e)),
            };
        }
        Error::from_reqwest_attempt(&e, meta)
    }

    /// Classifies the failure of one attempt (no response, or a body that could not be read).
    pub(crate) fn from_reqwest_attempt(e: &reqwest::Error, meta: ErrorMeta) -> Self {
        if e.is_timeout() {
            Error::Timeout { meta }
        } else if let Some(status) = e.status() {
            Error::from_status(status.as_u16(), None, None, meta)
        } else {
            Error::Transport {
                message: describe_reqwest(e),
                meta,
            }
        }
    }
}

/// A finished [`Error`] travelling through progenitor's code inside a `reqwest::Error` (the
/// only error type the client hooks may return); [`Error::from_reqwest`] takes it out again.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) Error);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// The error carried somewhere in `e`'s chain of sources.
    fn find(e: &reqwest::Error) -> Option<&Error> {
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            if let Some(Failure(error)) = cause.downcast_ref::<Failure>() {
                return Some(error);
            }
            source = cause.source();
        }
        None
    }

    /// A `reqwest::Error` that carries `error`: the error of reading a body that fails at once.
    pub(crate) async fn into_reqwest(error: Error) -> reqwest::Error {
        let failing = futures_util::stream::repeat_with(move || {
            Err::<bytes::Bytes, Failure>(Failure(error.clone()))
        });
        let mut response =
            reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(failing)));
        loop {
            // The first chunk already fails; the stream never ends, so this cannot spin.
            if let Err(e) = response.chunk().await {
                return e;
            }
        }
    }
}

/// Attempt count, correlation id and operation that the runtime stamped on a final response.
pub(crate) fn meta_from_headers(headers: &reqwest::header::HeaderMap) -> ErrorMeta {
    use crate::runtime::{ATTEMPTS_HEADER, CORRELATION_HEADER, OPERATION_HEADER};
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let attempts = text(ATTEMPTS_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    ErrorMeta {
        correlation_id: text(CORRELATION_HEADER),
        attempts,
        operation: text(OPERATION_HEADER),
    }
}

/// A short account of a reqwest error without the URL (which can carry filter values):
/// what failed (connecting, sending, reading the answer) and the innermost cause
/// (`connection refused`, `connection reset by peer`, ...).
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "connecting failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else if e.is_request() {
        "sending the request failed"
    } else if e.is_builder() {
        "invalid request"
    } else {
        "the exchange failed"
    };
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        innermost = Some(cause);
        source = cause.source();
    }
    let mut cause = innermost.map_or_else(String::new, |c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(io_kind_text)
            .map_or_else(|| c.to_string(), str::to_string)
    });
    if let Some(url) = e.url() {
        cause = cause.replace(url.as_str(), "<url>");
    }
    let cause = cause.replace(['\r', '\n'], " ");
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({cause})")
    }
}

fn io_kind_text(e: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind as K;
    Some(match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by the server",
        K::ConnectionAborted => "connection aborted",
        K::NotConnected => "not connected",
        K::BrokenPipe => "connection closed by the server",
        K::UnexpectedEof => "connection closed before the answer was complete",
        K::TimedOut => "timed out",
        K::AddrNotAvailable => "address not available",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        _ => return None,
    })
}

/// The wait of a 429 as the runtime read it (stamped on the final response), else the
/// response's own `Retry-After` against the system time.
pub(crate) fn runtime_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    use crate::runtime::RETRY_AFTER_MS_HEADER;
    headers
        .get(RETRY_AFTER_MS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .or_else(|| retry_after(headers, SystemTime::now()))
}

/// Reads `Retry-After` as delta-seconds or as an HTTP date (relative to `now`).
///
/// A number too large for `u64` reads as [`Duration::MAX`]; callers cap the wait (the
/// client's `max_retry_wait` and `max_backoff`), so no value overflows a clock sum.
pub(crate) fn retry_after(
    headers: &reqwest::header::HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    let delta = when.with_timezone(&chrono::Utc).signed_duration_since(now);
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

struct FieldList<'a>(&'a BTreeMap<String, Vec<String>>);

impl fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" [fields: ")?;
        for (i, (field, messages)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {}", messages.join(" "))?;
        }
        f.write_str("]")
    }
}

struct Msg<'a>(&'a Option<String>);

impl fmt::Display for Msg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(m) => write!(f, ": {m}"),
            None => Ok(()),
        }
    }
}

struct RetryAfter<'a>(&'a Option<Duration>);

impl fmt::Display for RetryAfter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "; retry after {} s", d.as_secs_f64()),
            None => Ok(()),
        }
    }
}

/// Removes quoted values from a serde message, so customer data never reaches an error:
/// `invalid type: string "Ann", expected i64` becomes `invalid type: string, expected i64`.
fn redact_values(message: &str) -> String {
    // serde_json appends " at line L column C": the path replaces it.
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in message.chars() {
        match quote {
            // serde quotes strings with Rust escapes (`"say \"hi\""`): an escaped quote
            // does not end the value.
            Some(_) if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => {
                quote = Some(c);
                out.push('…');
            }
            None => out.push(c),
        }
    }
    // `invalid type: string …, expected` reads better without the placeholder.
    out.replace(" …,", ",").replace(" …", "")
}

/// The JSON path (`data[3].grand_total`) of the value at 1-based `line`/`column` in `bytes`,
/// where serde_json reported an error.
pub(crate) fn json_path_at(bytes: &[u8], line: usize, column: usize) -> String {
    enum Frame {
        Object {
            key: Option<String>,
            expecting_key: bool,
        },
        Array {
            index: usize,
        },
    }

    // Byte offset of line/column.
    let mut offset = 0;
    let mut current_line = 1;
    while current_line < line && offset < bytes.len() {
        if bytes[offset] == b'\n' {
            current_line += 1;
        }
        offset += 1;
    }
    let end = (offset + column).min(bytes.len());

    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < end {
        match bytes[i] {
            b'{' => stack.push(Frame::Object {
                key: None,
                expecting_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { expecting_key, .. }) => *expecting_key = true,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = false;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(Frame::Object {
                    key,
                    expecting_key: true,
                }) = stack.last_mut()
                {
                    *key = Some(
                        String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned(),
                    );
                }
            }
            _ => {}
        }
        i += 1;
    }

    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                path.push('.');
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    if path.is_empty() {
        ".".to_string()
    } else {
        path.trim_start_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of<T: serde::de::DeserializeOwned + fmt::Debug>(json: &str) -> String {
        let err = serde_json::from_str::<T>(json).unwrap_err();
        json_path_at(json.as_bytes(), err.line(), err.column())
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        id: i64,
        name: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Envelope {
        data: Vec<Item>,
    }

    #[test]
    fn path_names_the_offending_field() {
        let json = r#"{"total": 3, "data": [{"id": 1, "name": "a"}, {"id": 2}, {"id": "x", "name": "b"}]}"#;
        assert_eq!(path_of::<Envelope>(json), "data[2].id");
        let pretty = "{\n  \"data\": [\n    {\"id\": 1},\n    {\"id\": 2, \"name\": 5}\n  ]\n}";
        assert_eq!(path_of::<Envelope>(pretty), "data[1].name");
        assert_eq!(
            path_of::<Envelope>(r#"{"data": [{"name": "a,}[\"b"}]}"#),
            "data[0]"
        );
    }

    #[test]
    fn messages_lose_the_values() {
        let err = serde_json::from_str::<Item>(r#"{"id": "Olena Kovalenko"}"#).unwrap_err();
        let msg = redact_values(&err.to_string());
        assert!(!msg.contains("Olena"), "{msg}");
        assert!(msg.contains("expected i64"), "{msg}");
    }

    #[test]
    fn escaped_quotes_inside_a_value_do_not_end_it() {
        let json = r#"{"id": "Olena \"Lena\" Kovalenko, tel 0501234567"}"#;
        let err = serde_json::from_str::<Item>(json).unwrap_err();
        let msg = redact_values(&err.to_string());
        for secret in ["Olena", "Lena", "Kovalenko", "0501234567"] {
            assert!(!msg.contains(secret), "{msg}");
        }
        assert!(msg.contains("expected i64"), "{msg}");
        assert_eq!(
            redact_values(
                r#"invalid value: string "a \"b\" c", expected "d\\" at line 1 column 9"#
            ),
            "invalid value: string, expected"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::now();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_473);
        assert_eq!(retry_after(&h, base), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn huge_retry_after_values_do_not_overflow() {
        let now = SystemTime::now();
        let mut h = reqwest::header::HeaderMap::new();
        for (value, expected) in [
            ("18446744073709551615", Duration::from_secs(u64::MAX)),
            ("99999999999999999999999999", Duration::MAX),
        ] {
            h.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            assert_eq!(retry_after(&h, now), Some(expected));
        }
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
        );
        assert!(retry_after(&h, now).is_some_and(|d| d > Duration::from_secs(1 << 37)));
    }
}
