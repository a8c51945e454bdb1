//! The framework-agnostic intake: query string, headers and raw body in; accepted (committed
//! to the durable inbox) or rejected with the HTTP status to answer out.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use super::event::{ParseLimits, WebhookError, WebhookEvent};
use crate::config::{Secret, SyncConfig};
use crate::store::{InboxDedupe, InboxId, NewInboxItem, StoreError};

/// Default window in which a redelivery of a stock body is a duplicate: 1 hour (KeyCRM retries
/// about three times, at undocumented intervals).
pub const DEFAULT_REDELIVERY_WINDOW: Duration = Duration::from_secs(3600);

/// Most deliveries committed together in one store transaction.
pub const MAX_GROUP: usize = 512;

/// An optional HMAC-SHA256 check of the raw body, for deployments where a gateway in front of
/// the receiver signs requests (KeyCRM itself signs nothing).
#[derive(Clone, Debug)]
pub struct SignatureCheck {
    /// The header carrying the signature: lowercase hex, optionally prefixed `sha256=`.
    pub header: String,
    /// The shared secret.
    pub secret: Secret,
}

/// How a [`WebhookReceiver`] checks and stores deliveries.
#[derive(Clone, Debug)]
pub struct ReceiverSettings {
    /// The token expected as `?token=` in the URL, compared in constant time. When empty, every
    /// delivery is refused with 401 unless [`ReceiverSettings::allow_unauthenticated`] is set.
    pub token: Secret,
    /// Accept deliveries without a token check when no token is configured. Only for a
    /// receiver that something else authenticates (a private network, a gateway).
    pub allow_unauthenticated: bool,
    /// An optional HMAC-SHA256 signature check.
    pub signature: Option<SignatureCheck>,
    /// Size and nesting limits.
    pub limits: ParseLimits,
    /// How long a redelivered stock body counts as a duplicate.
    pub redelivery_window: Duration,
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        Self {
            token: Secret::default(),
            allow_unauthenticated: false,
            signature: None,
            limits: ParseLimits::default(),
            redelivery_window: DEFAULT_REDELIVERY_WINDOW,
        }
    }
}

impl ReceiverSettings {
    /// Settings from the operator configuration: the token is
    /// [`SyncConfig::webhook_secret`]; everything else has its default.
    pub fn from_config(config: &SyncConfig) -> Self {
        Self {
            token: config.webhook_secret.clone(),
            ..Self::default()
        }
    }
}

/// One HTTP request as the host's framework received it.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookRequest<'a> {
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// `Content-Type`, if sent.
    pub content_type: Option<&'a str>,
    /// The signature header's value, if sent (see [`SignatureCheck::header`]).
    pub signature: Option<&'a [u8]>,
    /// The raw body.
    pub body: &'a [u8],
}

impl<'a> WebhookRequest<'a> {
    /// A request with this body and nothing else.
    pub fn new(body: &'a [u8]) -> Self {
        Self {
            body,
            ..Self::default()
        }
    }

    /// Sets the raw query string.
    pub fn query(mut self, query: &'a str) -> Self {
        self.query = Some(query);
        self
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, value: &'a str) -> Self {
        self.content_type = Some(value);
        self
    }

    /// Offers a header; `Content-Type` and the configured signature header are kept.
    pub fn header(mut self, settings: &ReceiverSettings, name: &str, value: &'a [u8]) -> Self {
        if name.eq_ignore_ascii_case("content-type") {
            self.content_type = std::str::from_utf8(value).ok();
        } else if settings
            .signature
            .as_ref()
            .is_some_and(|s| s.header.eq_ignore_ascii_case(name))
        {
            self.signature = Some(value);
        }
        self
    }
}

/// A delivery committed to the durable inbox (or recognised as a duplicate of one): answer
/// 200.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The inbox row, `None` for a duplicate.
    pub id: Option<InboxId>,
    /// The event name.
    pub event: String,
}

impl Accepted {
    /// Whether this delivery was already stored.
    pub fn duplicate(&self) -> bool {
        self.id.is_none()
    }

    /// The HTTP status to answer: 200.
    pub fn status(&self) -> u16 {
        200
    }
}

/// Why a delivery was refused. Nothing of it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Missing or wrong `?token=` (or no token configured): 401.
    Unauthorized,
    /// Missing or wrong signature header: 401.
    BadSignature,
    /// Larger than the size limit: 413.
    TooLarge(WebhookError),
    /// A `Content-Type` that is not JSON: 415.
    UnsupportedMediaType,
    /// Not a webhook KeyCRM sends: 400.
    Invalid(WebhookError),
    /// The store could not commit; KeyCRM will retry: 503.
    Unavailable(String),
}

impl Rejection {
    /// The HTTP status to answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized | Self::BadSignature => 401,
            Self::TooLarge(_) => 413,
            Self::UnsupportedMediaType => 415,
            Self::Invalid(_) => 400,
            Self::Unavailable(_) => 503,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized => f.write_str("missing or wrong webhook token"),
            Self::BadSignature => f.write_str("missing or wrong webhook signature"),
            Self::TooLarge(e) | Self::Invalid(e) => e.fmt(f),
            Self::UnsupportedMediaType => f.write_str("the webhook body is not JSON"),
            Self::Unavailable(e) => write!(f, "the webhook could not be stored: {e}"),
        }
    }
}

impl std::error::Error for Rejection {}

/// Builds the signature a gateway would send for `body` (lowercase hex of HMAC-SHA256,
/// prefixed `sha256=`), for tests and for signing proxies.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

type Answer = oneshot::Sender<Result<Option<InboxId>, String>>;

struct Job {
    item: NewInboxItem,
    answer: Answer,
}

/// Commits a group of inbox items in one store transaction (see
/// [`Store::inbox_insert_batch`](crate::store::Store::inbox_insert_batch)).
pub type CommitFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Vec<Option<InboxId>>, StoreError>> + Send>>;

/// Checks deliveries and commits them to the durable inbox in groups: each delivery is
/// answered once the group holding it is durable (one `fsync` for many deliveries). It never
/// waits for a sync pass or a KeyCRM request. Cheap to clone; clones share one committer.
///
/// Built by [`SyncEngine::webhook_receiver`](crate::SyncEngine::webhook_receiver) (the
/// engine's inbox worker is woken by each new delivery) or by [`WebhookReceiver::new`] with
/// any commit step.
#[derive(Clone)]
pub struct WebhookReceiver {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ReceiverSettings,
    token_digest: Option<[u8; 32]>,
    jobs: mpsc::Sender<Job>,
    stats: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
}

/// What a receiver (all its clones) has committed so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Store commits (each one durable write for a whole group).
    pub groups: u64,
    /// Deliveries stored as new inbox rows.
    pub stored: u64,
    /// Deliveries recognised as duplicates.
    pub duplicates: u64,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    /// A receiver committing with `commit` (called with up to [`MAX_GROUP`] items at a time).
    /// Spawns its committer task on the current Tokio runtime; it ends when the last clone is
    /// dropped.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn new<F>(settings: ReceiverSettings, commit: F) -> Self
    where
        F: Fn(Vec<NewInboxItem>) -> CommitFuture + Send + Sync + 'static,
    {
        let (jobs, mut rx) = mpsc::channel::<Job>(MAX_GROUP * 4);
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(MAX_GROUP);
            while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
                let (items, answers): (Vec<NewInboxItem>, Vec<Answer>) =
                    group.drain(..).map(|j| (j.item, j.answer)).unzip();
                match commit(items).await {
                    Ok(ids) => {
                        let stored = ids.iter().filter(|id| id.is_some()).count() as u64;
                        counters.groups.fetch_add(1, Ordering::Relaxed);
                        counters.stored.fetch_add(stored, Ordering::Relaxed);
                        counters
                            .duplicates
                            .fetch_add(ids.len() as u64 - stored, Ordering::Relaxed);
                        for (answer, id) in answers.into_iter().zip(ids) {
                            let _ = answer.send(Ok(id));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "keycrm_sync", error = %e, "webhook inbox commit failed");
                        for answer in answers {
                            let _ = answer.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        let token_digest = (!settings.token.is_empty())
            .then(|| Sha256::digest(settings.token.expose().as_bytes()).into());
        Self {
            inner: Arc::new(Inner {
                settings,
                token_digest,
                jobs,
                stats,
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ReceiverSettings {
        &self.inner.settings
    }

    /// Commits so far (the mean group size is `(stored + duplicates) / groups`).
    pub fn stats(&self) -> ReceiverStats {
        let c = &self.inner.stats;
        ReceiverStats {
            groups: c.groups.load(Ordering::Relaxed),
            stored: c.stored.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Checks an announced `Content-Length` before the body is read: `Err` (413) above the
    /// size limit. Frameworks that can refuse early should call it.
    pub fn check_length(&self, content_length: u64) -> Result<(), Rejection> {
        let limit = self.inner.settings.limits.max_bytes;
        if content_length > limit as u64 {
            return Err(Rejection::TooLarge(WebhookError::TooLarge {
                size: content_length,
                limit,
            }));
        }
        Ok(())
    }

    /// Checks the token, and the signature if configured: what needs no body parse.
    pub fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), Rejection> {
        let settings = &self.inner.settings;
        match &self.inner.token_digest {
            None if settings.allow_unauthenticated => {}
            None => return Err(Rejection::Unauthorized),
            Some(expected) => {
                let given = request.query.and_then(|q| query_param(q, "token"));
                let Some(given) = given else {
                    return Err(Rejection::Unauthorized);
                };
                let given: [u8; 32] = Sha256::digest(&given).into();
                if !bool::from(given.ct_eq(expected)) {
                    return Err(Rejection::Unauthorized);
                }
            }
        }
        if let Some(check) = &settings.signature {
            let given = request
                .signature
                .and_then(|s| std::str::from_utf8(s).ok())
                .map(|s| s.trim())
                .map(|s| s.strip_prefix("sha256=").unwrap_or(s))
                .and_then(decode_hex)
                .ok_or(Rejection::BadSignature)?;
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(check.secret.expose().as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(request.body);
            mac.verify_slice(&given)
                .map_err(|_| Rejection::BadSignature)?;
        }
        Ok(())
    }

    /// Checks a delivery without storing it: token, signature, media type, size, parse.
    pub fn check(&self, request: &WebhookRequest<'_>) -> Result<WebhookEvent, Rejection> {
        self.authenticate(request)?;
        if let Some(ct) = request.content_type {
            let mime = ct.split(';').next().unwrap_or_default().trim();
            let json = mime.eq_ignore_ascii_case("application/json")
                || mime.to_ascii_lowercase().ends_with("+json");
            if !json {
                return Err(Rejection::UnsupportedMediaType);
            }
        }
        WebhookEvent::parse_with(request.body, self.inner.settings.limits).map_err(|e| match e {
            WebhookError::TooLarge { .. } => Rejection::TooLarge(e),
            e => Rejection::Invalid(e),
        })
    }

    /// Takes one delivery: checks it, then commits it to the durable inbox (with the group
    /// that is being committed) and returns once it is durable. Answer with
    /// [`Accepted::status`] or [`Rejection::status`].
    pub async fn receive(&self, request: WebhookRequest<'_>) -> Result<Accepted, Rejection> {
        let event = self.check(&request)?;
        self.store(&event).await
    }

    /// The store step alone: commits an already checked event.
    pub async fn store(&self, event: &WebhookEvent) -> Result<Accepted, Rejection> {
        let item = inbox_item(event, self.inner.settings.redelivery_window, Utc::now());
        let (answer, rx) = oneshot::channel();
        let name = item.event.clone();
        self.inner
            .jobs
            .send(Job { item, answer })
            .await
            .map_err(|_| Rejection::Unavailable("the webhook committer has stopped".into()))?;
        match rx.await {
            Ok(Ok(id)) => Ok(Accepted { id, event: name }),
            Ok(Err(e)) => Err(Rejection::Unavailable(e)),
            Err(_) => Err(Rejection::Unavailable(
                "the webhook committer has stopped".into(),
            )),
        }
    }
}

/// The inbox row of an event: its dedupe key and rule (a redelivery within `window` before
/// `now` is a duplicate), the body in KeyCRM's form.
pub(crate) fn inbox_item(
    event: &WebhookEvent,
    window: Duration,
    now: chrono::DateTime<Utc>,
) -> NewInboxItem {
    let key = event.dedupe();
    let dedupe = match key.stream {
        None => InboxDedupe::Stored,
        Some(stream) => InboxDedupe::Latest {
            stream,
            since: chrono::Duration::from_std(window)
                .ok()
                .and_then(|w| now.checked_sub_signed(w))
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC),
        },
    };
    NewInboxItem {
        dedupe_key: key.key,
        event: event.name().to_string(),
        payload: event.to_json(),
        dedupe,
    }
}

/// The decoded value of a query parameter (`+` and `%XX` decoded), the first if repeated.
fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name.as_bytes()).then(|| percent_decode(v))?
    })
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
