//! The axum router: thin handlers over [`Service`].

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::StreamExt;
use serde::Deserialize;

use super::{DASHBOARD_HTML, HttpError, HttpOptions, METRICS_CONTENT_TYPE, Service, StreamItem};
use crate::engine::SyncEngine;
use crate::host::Host;
use crate::store::Store;
use crate::webhook::WebhookRequest;

/// The router of an engine, mountable under any prefix (`Router::nest("/sync-admin", ..)`).
/// Builds a [`Service`] (so it must be called inside a tokio runtime).
///
/// | route | auth | answers |
/// |---|---|---|
/// | `GET /` | none | the dashboard page (it asks for the admin token once) |
/// | `POST /webhooks/keycrm` | the webhook `?token=` | 200 once stored; 401, 413, 415, 400, 503 (see [`Service::receive_webhook`]) |
/// | `GET /healthz` | none | 200 `{"status": "ok"}` |
/// | `GET /readyz` | none | 200, or 503 when the store fails or KeyCRM is silent with work pending |
/// | `GET /metrics` | admin (unless `public_metrics`) | Prometheus text |
/// | `GET /events` | admin (header or `?access_token=`) | SSE; `Last-Event-ID` or `?last_event_id=` resumes |
/// | `GET /ws` | admin (header or `?access_token=`) | WebSocket of the same events |
/// | `POST /sync/{orders,buyers,products,offers}/{local_id}` | admin | 200 run report; 404 unknown id |
/// | `POST /sync/full-resync` | admin | 202 job; 409 while one runs |
/// | `GET /sync/jobs/{id}` | admin | 200 job; 404 |
/// | `GET /sync/status` | admin | 200 status |
/// | `GET /sync/conflicts` | admin | 200 recent conflicts |
/// | `GET /sync/dead-letters` | admin | 200 list |
/// | `POST /sync/dead-letters/{id}/retry` | admin | 200; 404 |
/// | `DELETE /sync/dead-letters/{id}` | admin | 204; 404 |
///
/// Management routes answer 401 `{"error": "missing_token"|"invalid_token", ..}` without the
/// right `Authorization: Bearer <admin token>`; every error is JSON `{error, message}`.
pub fn router<S: Store, H: Host>(engine: SyncEngine<S, H>, options: HttpOptions) -> Router {
    router_with(Service::new(engine, options))
}

/// The router over an existing [`Service`] (keep a clone to evaluate alerts or read metrics).
pub fn router_with<S: Store, H: Host>(service: Service<S, H>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/webhooks/keycrm", post(webhook::<S, H>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S, H>))
        .route("/metrics", get(metrics::<S, H>))
        .route("/events", get(events::<S, H>))
        .route("/ws", get(ws::<S, H>))
        .route("/sync/status", get(status::<S, H>))
        .route("/sync/conflicts", get(conflicts::<S, H>))
        .route("/sync/dead-letters", get(dead_letters::<S, H>))
        .route("/sync/dead-letters/{id}", delete(discard::<S, H>))
        .route("/sync/dead-letters/{id}/retry", post(retry::<S, H>))
        .route("/sync/full-resync", post(full_resync::<S, H>))
        .route("/sync/jobs/{id}", get(job::<S, H>))
        .route("/sync/{kind}/{local_id}", post(sync_record::<S, H>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}

/// An [`HttpError`] as an axum response.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keycrm-sync\""),
            );
        }
        response
    }
}

async fn not_found() -> HttpError {
    HttpError::new(404, "not_found", "no such route")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        405,
        "method_not_allowed",
        "this route does not take that method",
    )
}

fn admin<S: Store, H: Host>(service: &Service<S, H>, headers: &HeaderMap) -> Result<(), HttpError> {
    service.authorize(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:",
            ),
        ],
        Html(DASHBOARD_HTML),
    )
}

async fn webhook<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, HttpError> {
    let receiver = service.webhook_receiver();
    // A declared size above the limit is refused before the body is read.
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        receiver
            .check_length(length)
            .map_err(|r| HttpError::from_rejection(&r))?;
    }
    let limit = receiver.settings().limits.max_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        HttpError::new(
            413,
            "payload_too_large",
            format!("the webhook body is larger than {limit} bytes or broke off"),
        )
    })?;
    let mut request = WebhookRequest::new(&bytes);
    if let Some(query) = query.as_deref() {
        request = request.query(query);
    }
    for (name, value) in &headers {
        request = request.header(receiver.settings(), name.as_str(), value.as_bytes());
    }
    Ok(Json(service.receive_webhook(request).await?).into_response())
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz<S: Store, H: Host>(State(service): State<Service<S, H>>) -> Response {
    match service.readiness().await {
        Ok(r) => Json(r).into_response(),
        Err((r, e)) => {
            let mut body = serde_json::to_value(&r).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                map.insert("error".into(), e.error.into());
                map.insert("message".into(), e.message.into());
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    if !service.options().public_metrics {
        admin(&service, &headers)?;
    }
    let text = service.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}

#[derive(Deserialize)]
struct StreamQuery {
    access_token: Option<String>,
    last_event_id: Option<u64>,
}

fn stream_auth<S: Store, H: Host>(
    service: &Service<S, H>,
    headers: &HeaderMap,
    query: &StreamQuery,
) -> Result<Option<u64>, HttpError> {
    match (
        &query.access_token,
        headers.contains_key(header::AUTHORIZATION),
    ) {
        (Some(token), false) => service.check_token(token)?,
        _ => admin(service, headers)?,
    }
    let header_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(header_id.or(query.last_event_id))
}

async fn events<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, HttpError> {
    let last = stream_auth(&service, &headers, &query)?;
    let stream = service.events(last).into_stream().map(|item| {
        let data = item.to_json().to_string();
        let event = match &item {
            StreamItem::Event(e) => Event::default().id(e.id.to_string()).data(data),
            _ => Event::default().data(data),
        };
        Ok::<_, Infallible>(event)
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn ws<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    Query(query): Query<StreamQuery>,
    request: Request,
) -> Result<Response, HttpError> {
    let (mut parts, _) = request.into_parts();
    // Authenticated before the upgrade is looked at: no token, 401, even for a plain GET.
    let last = stream_auth(&service, &parts.headers, &query)?;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| HttpError::new(400, "not_websocket", e.body_text()))?;
    let subscription = service.events(last);
    Ok(upgrade.on_upgrade(move |socket| serve_ws(socket, subscription)))
}

async fn serve_ws(mut socket: WebSocket, mut subscription: super::Subscription) {
    loop {
        tokio::select! {
            item = subscription.next() => {
                let Some(item) = item else { break };
                let text = item.to_json().to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    // Shut down, or told it lagged: close politely.
    let _ = socket.send(Message::Close(None)).await;
}

async fn status<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    Ok(Json(service.status().await?).into_response())
}

async fn conflicts<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    Ok(Json(service.conflicts().await?).into_response())
}

async fn dead_letters<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    Ok(Json(service.dead_letters().await?).into_response())
}

fn parse_id(id: &str) -> Result<i64, HttpError> {
    id.parse()
        .map_err(|_| HttpError::new(404, "not_found", "dead letter ids are integers"))
}

async fn retry<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    let queued = service.retry_dead_letter(parse_id(&id)?).await?;
    Ok(Json(serde_json::json!({"queued": queued})).into_response())
}

async fn discard<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    service.discard_dead_letter(parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn full_resync<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    let job = service.start_full_resync()?;
    let location = format!("jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(job)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

async fn job<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    Ok(Json(service.job(&id)?).into_response())
}

async fn sync_record<S: Store, H: Host>(
    State(service): State<Service<S, H>>,
    headers: HeaderMap,
    Path((kind, local_id)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    admin(&service, &headers)?;
    Ok(Json(service.sync_record(&kind, &local_id).await?).into_response())
}
