//! The service layer without axum: plain hyper over the framework-free
//! [`keycrm::sync::http::Service`] (the same calls an actix-web or warp host would make).
//!
//! Runs the engine against the KeyCRM simulator and serves, on 127.0.0.1:8088 (or `PORT`):
//! `GET /` (dashboard), `GET /healthz`, `GET /sync/status`, `GET /metrics`, `GET /events` (SSE),
//! `POST /sync/orders/{id}`. The admin token is `demo-admin-token`.
//!
//! ```text
//! cargo run --example hyper_host
//! curl -H 'Authorization: Bearer demo-admin-token' localhost:8088/sync/status
//! ```

use std::convert::Infallible;

use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use keycrm::api::mock::{KeyCrmMock, Quota};
use keycrm::sync::SyncEngine;
use keycrm::sync::canonical::{CanonicalContact, CanonicalLine, CanonicalOrder, Mappings};
use keycrm::sync::config::SyncConfig;
use keycrm::sync::host::MemoryHost;
use keycrm::sync::http::{DASHBOARD_HTML, HttpError, HttpOptions, METRICS_CONTENT_TYPE, Service};
use keycrm::sync::store::MemoryStore;

type Body = BoxBody<Bytes, Infallible>;
type Svc = Service<MemoryStore, MemoryHost>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("a valid response")
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    full(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn error(e: HttpError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        e.body().to_string(),
    )
}

async fn handle(service: Svc, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let admin = || service.authorize(auth.as_deref());
    let response = match (request.method(), path.as_str()) {
        (&Method::GET, "/") => full(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_HTML),
        (&Method::GET, "/healthz") => json(&serde_json::json!({"status": "ok"})),
        (&Method::GET, "/sync/status") => match admin() {
            Ok(()) => service.status().await.map_or_else(error, |s| json(&s)),
            Err(e) => error(e),
        },
        (&Method::GET, "/metrics") => match admin() {
            Ok(()) => match service.metrics_text().await {
                Ok(text) => full(StatusCode::OK, METRICS_CONTENT_TYPE, text),
                Err(e) => error(e),
            },
            Err(e) => error(e),
        },
        (&Method::GET, "/events") => match admin() {
            Ok(()) => {
                let last = request
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let frames = service.events(last).into_stream().map(|item| {
                    let id = match &item {
                        keycrm::sync::http::StreamItem::Event(e) => format!("id: {}\n", e.id),
                        _ => String::new(),
                    };
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
                        "{id}data: {}\n\n",
                        item.to_json()
                    ))))
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(BodyExt::boxed(StreamBody::new(frames)))
                    .expect("a valid response")
            }
            Err(e) => error(e),
        },
        (&Method::POST, p) if p.starts_with("/sync/orders/") => match admin() {
            Ok(()) => service
                .sync_record("orders", &p["/sync/orders/".len()..])
                .await
                .map_or_else(error, |r| json(&r)),
            Err(e) => error(e),
        },
        _ => error(HttpError::new(404, "not_found", "no such route")),
    };
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let config = SyncConfig::default();
    let host = MemoryHost::new(Mappings::from_config(&config));
    host.put_order(CanonicalOrder {
        local_id: "WMS-1".into(),
        number: Some("WMS-1".into()),
        buyer: CanonicalContact {
            name: Some("Demo Buyer".into()),
            phone: Some("+380501234567".into()),
            email: None,
        },
        lines: vec![CanonicalLine {
            sku: "TEA-1".into(),
            name: "Tea".into(),
            quantity: 1.into(),
            price: "149.90".parse()?,
        }],
        ..CanonicalOrder::default()
    });
    let engine: SyncEngine<MemoryStore, MemoryHost> = SyncEngine::builder()
        .client(mock.client_builder().requests_per_minute(0).build()?)
        .store(MemoryStore::new())
        .host(host)
        .config(config)
        .build()?;
    let service = Service::new(engine.clone(), HttpOptions::new("demo-admin-token"));
    let runner = engine.clone();
    let token = engine.shutdown_token();
    tokio::spawn(async move { runner.run(token).await });

    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8088u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("serving on http://{}", listener.local_addr()?);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let service = service.clone();
                tokio::spawn(async move {
                    let handler = hyper::service::service_fn(move |req| handle(service.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        }
    }
    // Ends the event streams, so open connections finish.
    engine.shutdown();
    Ok(())
}
