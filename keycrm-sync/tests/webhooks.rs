//! Webhooks end to end: typed events, the receiver's answers for every class of request, the
//! durable inbox, the inbox worker, stock deliveries and forged data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_api::{Decimal, types};
use keycrm_sync::canonical::{CanonicalOffer, CanonicalProduct, CanonicalStock, Mappings};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::{Applied, Host, HostError, LocalChanges, MemoryHost, RemoteChange};
use keycrm_sync::model::{EntityKind, Fields, Snapshot};
use keycrm_sync::store::{MemoryStore, NewInboxItem, SqliteStore, Store};
use keycrm_sync::webhook::{
    ParseLimits, ReceiverSettings, Rejection, SignatureCheck, WebhookError, WebhookEvent,
    WebhookReceiver, WebhookRequest, sign,
};
use keycrm_sync::{SyncEngine, SyncEvent};
use serde_json::json;

mod support;
use support::{config_with, dec, order, unpaced_client};

const TOKEN: &str = "t0k3n-9f8e7d";

fn config() -> SyncConfig {
    SyncConfig {
        webhook_secret: Secret::new(TOKEN),
        ..config_with(
            &[
                "new",
                "approved",
                "packing",
                "shipped",
                "completed",
                "canceled",
            ],
            &["cod", "card"],
            &["main"],
        )
    }
}

/// A host that blocks in `changes_since` (the first step of every run) while armed, until
/// released: a sync pass that does not end on its own.
#[derive(Clone)]
struct BlockingHost {
    inner: MemoryHost,
    armed: Arc<AtomicBool>,
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

impl BlockingHost {
    fn new(inner: MemoryHost) -> Self {
        Self {
            inner,
            armed: Arc::new(AtomicBool::new(false)),
            entered: Arc::new(tokio::sync::Notify::new()),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl Host for BlockingHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<LocalChanges, HostError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            let _permit = self.release.acquire().await.expect("semaphore open");
        }
        self.inner.changes_since(kind, cursor).await
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<Snapshot>, HostError> {
        self.inner.load(kind, local_id).await
    }

    async fn apply(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        self.inner.apply(kind, change).await
    }

    async fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> Result<Option<String>, HostError> {
        self.inner.find_local(kind, fields).await
    }
}

struct Rig<S: Store> {
    mock: KeyCrmMock,
    host: MemoryHost,
    blocking: BlockingHost,
    engine: SyncEngine<S, BlockingHost>,
}

async fn rig_on<S: Store>(store: S, config: SyncConfig) -> Rig<S> {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .webhook_attempts(1)
        .start()
        .await;
    let client = unpaced_client(&mock);
    let host = MemoryHost::new(Mappings::from_config(&config));
    let blocking = BlockingHost::new(host.clone());
    let engine = SyncEngine::builder()
        .client(client)
        .store(store)
        .host(blocking.clone())
        .config(config)
        .build()
        .unwrap();
    Rig {
        mock,
        host,
        blocking,
        engine,
    }
}

async fn rig() -> Rig<MemoryStore> {
    rig_on(MemoryStore::new(), config()).await
}

fn query() -> String {
    format!("token={TOKEN}")
}

fn json_request(body: &[u8]) -> WebhookRequest<'_> {
    WebhookRequest::new(body).content_type("application/json")
}

/// A receiver over a bare `MemoryStore`, as a host without the engine would build it.
fn standalone(settings: ReceiverSettings) -> (WebhookReceiver, MemoryStore) {
    let store = MemoryStore::new();
    let commit_store = store.clone();
    let receiver = WebhookReceiver::new(settings, move |items: Vec<NewInboxItem>| {
        let store = commit_store.clone();
        Box::pin(async move { store.inbox_insert_batch(&items, chrono::Utc::now()).await })
    });
    (receiver, store)
}

fn settings() -> ReceiverSettings {
    ReceiverSettings::from_config(&config())
}

async fn stored<S: Store>(store: &S) -> usize {
    store.inbox_pending(1000).await.unwrap().len()
}

fn status_body(id: i64, status_id: i64, updated_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": "order.change_order_status",
        "context": {
            "id": id,
            "status_id": status_id,
            "payment_status": "not_paid",
            "grand_total": "240.00",
            "status_changed_at": updated_at,
            "updated_at": updated_at,
            "manager_comment": "Передзвонити Олені Петренко",
        }
    }))
    .unwrap()
}

// -------------------------------------------------------------------------------------------
// Typed events

#[test]
fn trigger_events_parse_tolerantly_and_keep_unknown_fields() {
    let body = br#"{"event":"order.change_order_status","context":{
        "id":"1357","status_id":4,"source_uuid":9001,"grand_total":"2.00","payments_total":12.5,
        "status_changed_at":"2026-01-29T18:53:35.000000Z","updated_at":"2026-01-29 18:53:36",
        "created_at":"","products_total":"2.00","is_gift":false}}"#;
    let WebhookEvent::OrderStatusChanged(c) = WebhookEvent::parse(body).unwrap() else {
        panic!("an order status event");
    };
    assert_eq!(c.id, 1357);
    assert_eq!(c.status_id, Some(4));
    assert_eq!(c.source_uuid.as_deref(), Some("9001"));
    assert_eq!(c.grand_total, Some(dec("2")));
    assert_eq!(c.payments_total, Some(dec("12.5")));
    assert_eq!(
        c.status_changed_at.unwrap().to_string(),
        "2026-01-29 18:53:35"
    );
    assert_eq!(c.updated_at.unwrap().to_string(), "2026-01-29 18:53:36");
    assert_eq!(c.created_at, None);
    assert_eq!(c.extra["products_total"], "2.00");
    assert_eq!(c.extra["is_gift"], false);

    let lead = br#"{"event":"lead.change_lead_status","context":{"id":7,"pipeline_id":2,"status_id":11,"title":"Card"}}"#;
    let WebhookEvent::LeadStatusChanged(l) = WebhookEvent::parse(lead).unwrap() else {
        panic!("a lead event");
    };
    assert_eq!((l.id, l.pipeline_id, l.status_id), (7, Some(2), Some(11)));
    assert_eq!(l.extra["title"], "Card");

    let pay =
        br#"{"event":"order.change_payment_status","context":{"id":1,"payment_status":"paid"}}"#;
    let event = WebhookEvent::parse(pay).unwrap();
    assert_eq!(event.name(), "order.change_payment_status");

    let unknown = br#"{"event":"order.products_reserved","context":{"id":1},"x":[1]}"#;
    let WebhookEvent::Unknown { event, body } = WebhookEvent::parse(unknown).unwrap() else {
        panic!("unknown events are kept");
    };
    assert_eq!(event, "order.products_reserved");
    assert_eq!(body["x"], json!([1]), "kept whole");
}

#[test]
fn stock_rows_accept_numeric_strings_and_need_an_offer_id_or_a_sku() {
    let body = br#"[{"offer_id":5,"sku":"TEA-1","in_stock":"118.000","in_reserve":2},
                    {"sku":"CUP-1","in_stock":3},{"offer_id":6,"sku":"","in_stock":0}]"#;
    let WebhookEvent::StockChanged(rows) = WebhookEvent::parse(body).unwrap() else {
        panic!("a stock delivery");
    };
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].in_stock, dec("118"));
    assert_eq!(rows[0].in_reserve, Some(dec("2")));
    assert_eq!(rows[1].offer_id, None);
    assert_eq!(rows[2].sku, None, "an empty SKU is no SKU");

    let err = WebhookEvent::parse(br#"[{"offer_id":5,"in_stock":1},{"sku":"","in_stock":1}]"#)
        .unwrap_err();
    assert_eq!(
        err,
        WebhookError::Invalid {
            path: "[1]".into(),
            problem: "a stock row needs an `offer_id` or a non-empty `sku`"
        }
    );
    let err = WebhookEvent::parse(br#"[{"offer_id":5,"in_stock":"lots"}]"#).unwrap_err();
    assert!(err.to_string().contains("`[0].in_stock`"), "{err}");
    assert!(
        !err.to_string().contains("lots"),
        "no values in errors: {err}"
    );
}

#[test]
fn errors_name_the_path_and_never_the_value() {
    let body = br#"{"event":"order.change_order_status","context":{"id":"Olena Petrenko"}}"#;
    let err = WebhookEvent::parse(body).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid webhook at `context.id`: expected an integer"
    );
    let body =
        br#"{"event":"order.change_order_status","context":{"id":1,"updated_at":"+380501234567"}}"#;
    let err = WebhookEvent::parse(body).unwrap_err();
    assert!(err.to_string().contains("context.updated_at"), "{err}");
    assert!(!err.to_string().contains("380501234567"), "{err}");
    let err = WebhookEvent::parse(br#"{"event":"order.change_order_status"}"#).unwrap_err();
    assert!(err.to_string().contains("`context`: missing"), "{err}");
}

#[test]
fn debug_shows_no_customer_data() {
    let event = WebhookEvent::parse(&status_body(1, 4, "2026-01-29 18:53:35")).unwrap();
    let shown = format!("{event:?}");
    assert!(shown.contains("id: 1"), "{shown}");
    assert!(!shown.contains("Петренко"), "{shown}");
}

#[test]
fn limits_are_configurable_and_checked_before_parsing() {
    let limits = ParseLimits {
        max_bytes: 64,
        max_depth: 3,
    };
    let long = format!(r#"[{{"sku":"{}","in_stock":1}}]"#, "A".repeat(100));
    assert!(matches!(
        WebhookEvent::parse_with(long.as_bytes(), limits),
        Err(WebhookError::TooLarge { limit: 64, .. })
    ));
    assert!(matches!(
        WebhookEvent::parse_with(br#"[{"sku":"A","in_stock":1,"x":[[1]]}]"#, limits),
        Err(WebhookError::TooDeep { limit: 3 })
    ));
    // Brackets inside strings do not count.
    assert!(WebhookEvent::parse_with(br#"[{"sku":"[[[[[[","in_stock":1}]"#, limits).is_ok());
}

#[test]
fn dedupe_keys_come_from_the_typed_event() {
    let a = WebhookEvent::parse(&status_body(1, 4, "2026-01-29 18:53:35")).unwrap();
    let a_iso = WebhookEvent::parse(&status_body(1, 4, "2026-01-29T18:53:35Z")).unwrap();
    let b = WebhookEvent::parse(&status_body(1, 4, "2026-01-29 18:54:00")).unwrap();
    assert_eq!(
        a.dedupe(),
        a_iso.dedupe(),
        "both timestamp forms are one change"
    );
    assert_ne!(a.dedupe(), b.dedupe());
    // Without change times, two different contexts never share a key.
    let c = WebhookEvent::parse(
        br#"{"event":"order.change_order_status","context":{"id":1,"grand_total":1}}"#,
    )
    .unwrap();
    let d = WebhookEvent::parse(
        br#"{"event":"order.change_order_status","context":{"id":1,"grand_total":2}}"#,
    )
    .unwrap();
    assert_ne!(c.dedupe().key, d.dedupe().key);
    // Stock: one stream per set of offers, the key per set of levels.
    let s118 = WebhookEvent::parse(br#"[{"offer_id":5,"sku":"TEA-1","in_stock":118}]"#).unwrap();
    let s118s =
        WebhookEvent::parse(br#"[{"offer_id":5,"sku":"TEA-1","in_stock":"118.000"}]"#).unwrap();
    let s117 = WebhookEvent::parse(br#"[{"offer_id":5,"sku":"TEA-1","in_stock":117}]"#).unwrap();
    assert_eq!(s118.dedupe(), s118s.dedupe());
    assert_ne!(s118.dedupe().key, s117.dedupe().key);
    assert_eq!(s118.dedupe().stream, s117.dedupe().stream);
    assert!(s118.dedupe().stream.is_some());
}

// -------------------------------------------------------------------------------------------
// The receiver's answers

#[tokio::test]
async fn every_bad_request_gets_its_status_and_stores_nothing() {
    let (receiver, store) = standalone(settings());
    let valid = status_body(1, 4, "2026-01-29 18:53:35");
    let deep = "[".repeat(100_000);
    let two_mib = {
        let mut b = br#"[{"sku":"TEA-1","in_stock":1,"pad":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
        b.extend_from_slice(br#""}]"#);
        b
    };
    let q = query();
    let cases: Vec<(&str, WebhookRequest<'_>, u16)> = vec![
        ("missing token", json_request(&valid), 401),
        (
            "wrong token",
            json_request(&valid).query("token=guess"),
            401,
        ),
        (
            "token of another name",
            json_request(&valid).query("t0ken=t0k3n-9f8e7d"),
            401,
        ),
        (
            "token prefix",
            json_request(&valid).query("token=t0k3n"),
            401,
        ),
        ("empty", json_request(b"").query(&q), 400),
        ("whitespace", json_request(b" \n").query(&q), 400),
        (
            "truncated",
            json_request(&valid[..valid.len() - 7]).query(&q),
            400,
        ),
        ("not JSON", json_request(b"event=order").query(&q), 400),
        (
            "not a JSON media type",
            WebhookRequest::new(b"event=order")
                .query(&q)
                .content_type("application/x-www-form-urlencoded"),
            415,
        ),
        ("a JSON scalar", json_request(b"42").query(&q), 400),
        ("a JSON string", json_request(br#""order""#).query(&q), 400),
        (
            "an object without event",
            json_request(br#"{"context":{"id":1}}"#).query(&q),
            400,
        ),
        (
            "a context of the wrong type",
            json_request(br#"{"event":"order.change_order_status","context":[1]}"#).query(&q),
            400,
        ),
        (
            "a context without an integer id",
            json_request(br#"{"event":"order.change_order_status","context":{"id":1.5}}"#)
                .query(&q),
            400,
        ),
        (
            "a stock row without id and SKU",
            json_request(br#"[{"in_stock":0}]"#).query(&q),
            400,
        ),
        (
            "a stock row with an empty SKU and no id",
            json_request(br#"[{"sku":"","in_stock":0}]"#).query(&q),
            400,
        ),
        (
            "an empty stock delivery",
            json_request(b"[]").query(&q),
            400,
        ),
        ("2 MiB", json_request(&two_mib).query(&q), 413),
        (
            "100,000-deep nesting",
            json_request(deep.as_bytes()).query(&q),
            400,
        ),
    ];
    for (name, request, status) in cases {
        let rejection = receiver.receive(request).await.unwrap_err();
        assert_eq!(rejection.status(), status, "{name}: {rejection}");
        assert!(
            !rejection.to_string().contains(TOKEN),
            "{name}: {rejection}"
        );
    }
    assert_eq!(stored(&store).await, 0, "nothing stored");
    // The size is refused from Content-Length before the body is read.
    assert_eq!(
        receiver.check_length(2 * 1024 * 1024).unwrap_err().status(),
        413
    );
    assert!(receiver.check_length(1024).is_ok());
    // And a valid delivery is accepted, once.
    let ok = receiver
        .receive(json_request(&valid).query(&q))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(!ok.duplicate());
    let again = receiver
        .receive(json_request(&valid).query(&format!("a=1&token={TOKEN}")))
        .await
        .unwrap();
    assert!(again.duplicate(), "a redelivery is a duplicate");
    assert_eq!(stored(&store).await, 1);
    let stats = receiver.stats();
    assert_eq!((stats.stored, stats.duplicates, stats.groups), (1, 1, 2));
}

#[tokio::test]
async fn an_empty_token_refuses_everything_unless_the_host_opts_in() {
    let valid = status_body(1, 4, "2026-01-29 18:53:35");
    let (closed, store) = standalone(ReceiverSettings::default());
    for query in ["", "token=", "token=anything"] {
        let rejection = closed
            .receive(json_request(&valid).query(query))
            .await
            .unwrap_err();
        assert_eq!(rejection, Rejection::Unauthorized);
    }
    assert_eq!(stored(&store).await, 0);
    let (open, store) = standalone(ReceiverSettings {
        allow_unauthenticated: true,
        ..ReceiverSettings::default()
    });
    assert!(open.receive(json_request(&valid)).await.is_ok());
    assert_eq!(stored(&store).await, 1);
}

#[tokio::test]
async fn a_gateway_signature_is_checked_when_configured() {
    let secret = Secret::new("gateway-shared-secret");
    let settings = ReceiverSettings {
        signature: Some(SignatureCheck {
            header: "X-Signature".into(),
            secret: secret.clone(),
        }),
        ..settings()
    };
    let (receiver, store) = standalone(settings.clone());
    let body = status_body(1, 4, "2026-01-29 18:53:35");
    let good = sign(&secret, &body);
    let bad = sign(&Secret::new("other"), &body);
    let q = query();
    let missing = receiver.receive(json_request(&body).query(&q)).await;
    assert_eq!(missing.unwrap_err(), Rejection::BadSignature);
    let wrong = receiver
        .receive(
            json_request(&body)
                .query(&q)
                .header(&settings, "x-signature", bad.as_bytes()),
        )
        .await;
    assert_eq!(wrong.unwrap_err().status(), 401);
    let tampered = {
        let mut b = body.clone();
        b[20] ^= 1;
        b
    };
    let wrong_body = receiver
        .receive(json_request(&tampered).query(&q).header(
            &settings,
            "X-Signature",
            good.as_bytes(),
        ))
        .await;
    assert_eq!(wrong_body.unwrap_err().status(), 401);
    assert_eq!(stored(&store).await, 0);
    let ok = receiver
        .receive(
            json_request(&body)
                .query(&q)
                .header(&settings, "X-Signature", good.as_bytes())
                .header(
                    &settings,
                    "Content-Type",
                    b"application/json; charset=utf-8",
                ),
        )
        .await
        .unwrap();
    assert!(!ok.duplicate());
    assert_eq!(stored(&store).await, 1);
}

#[tokio::test]
async fn a_store_that_cannot_commit_answers_503_so_keycrm_retries() {
    let receiver = WebhookReceiver::new(settings(), |_items| {
        Box::pin(async { Err(keycrm_sync::store::StoreError::Backend("disk full".into())) })
    });
    let body = status_body(1, 4, "2026-01-29 18:53:35");
    let rejection = receiver
        .receive(json_request(&body).query(&query()))
        .await
        .unwrap_err();
    assert_eq!(rejection.status(), 503);
}

// -------------------------------------------------------------------------------------------
// The engine: stored once, applied once, apart from the request

async fn pushed_order(rig: &Rig<impl Store>) -> i64 {
    rig.host.put_order(order(1));
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    rig.mock.crm().order_ids()[0]
}

fn context_body(rig: &Rig<impl Store>, id: i64) -> Vec<u8> {
    let context = rig.mock.crm().order(id).unwrap();
    serde_json::to_vec(&json!({"event": "order.change_order_status", "context": context})).unwrap()
}

#[tokio::test]
async fn a_valid_event_is_stored_once_and_applied_once() {
    let rig = rig_on(SqliteStore::open_in_memory().unwrap(), config()).await;
    let id = pushed_order(&rig).await;
    rig.mock.crm().set_order_status(id, 4);
    let body = context_body(&rig, id);
    let receiver = rig.engine.webhook_receiver();
    let q = query();
    let first = receiver
        .receive(json_request(&body).query(&q))
        .await
        .unwrap();
    assert!(!first.duplicate());
    let second = receiver
        .receive(json_request(&body).query(&q))
        .await
        .unwrap();
    assert!(second.duplicate(), "a redelivery is a duplicate");
    assert_eq!(rig.engine.status().await.unwrap().inbox_backlog, 1);
    rig.mock.clear_log();
    let report = rig.engine.apply_inbox().await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert_eq!(rig.mock.count("order_get"), 1, "{:?}", rig.mock.requests());
    rig.mock.clear_log();
    let again = rig.engine.apply_inbox().await.unwrap();
    assert_eq!((again.applied, again.pulled), (0, 0));
    assert_eq!(rig.mock.request_count(), 0, "applied once");
    assert_eq!(rig.engine.status().await.unwrap().inbox_backlog, 0);
}

#[tokio::test]
async fn an_older_status_never_overwrites_a_newer_one() {
    let rig = rig().await;
    let id = pushed_order(&rig).await;
    rig.mock.crm().set_order_status(id, 2);
    let older = context_body(&rig, id);
    rig.mock.crm().set_order_status(id, 4);
    let newer = context_body(&rig, id);
    let receiver = rig.engine.webhook_receiver();
    let q = query();
    // Delivered out of order: the newer first.
    assert!(
        !receiver
            .receive(json_request(&newer).query(&q))
            .await
            .unwrap()
            .duplicate()
    );
    assert!(
        !receiver
            .receive(json_request(&older).query(&q))
            .await
            .unwrap()
            .duplicate()
    );
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
}

#[tokio::test]
async fn intake_during_a_blocked_sync_pass_is_answered_before_the_pass_ends() {
    let rig = rig().await;
    let id = pushed_order(&rig).await;
    rig.mock.crm().set_order_status(id, 4);
    let body = context_body(&rig, id);
    let receiver = rig.engine.webhook_receiver();
    rig.blocking.armed.store(true, Ordering::SeqCst);
    let entered = rig.blocking.entered.notified();
    let engine = rig.engine.clone();
    let pass = tokio::spawn(async move { engine.run_once().await });
    entered.await;
    let accepted = receiver
        .receive(json_request(&body).query(&query()))
        .await
        .unwrap();
    assert!(!accepted.duplicate());
    assert!(
        !pass.is_finished(),
        "answered while the pass is still blocked"
    );
    assert_eq!(
        rig.engine.store().inbox_pending(10).await.unwrap().len(),
        1,
        "durable before the answer"
    );
    rig.blocking.release.add_permits(1);
    let report = pass.await.unwrap().unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped"),
        "the run applied what arrived during it"
    );
}

#[tokio::test]
async fn the_worker_wakes_on_each_insert_and_uses_the_engine_client() {
    let rig = rig().await;
    let id = pushed_order(&rig).await;
    let shutdown = keycrm_sync::CancellationToken::new();
    let worker = tokio::spawn({
        let engine = rig.engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run_inbox_worker(shutdown).await }
    });
    let mut events = Box::pin(rig.engine.subscribe());
    let receiver = rig.engine.webhook_receiver();
    let requests_before = rig.engine.client().stats().requests;
    for status in [2, 4] {
        rig.mock.crm().set_order_status(id, status);
        let body = context_body(&rig, id);
        receiver
            .receive(json_request(&body).query(&query()))
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the worker applied the delivery")
            .unwrap();
        assert!(
            matches!(
                event,
                SyncEvent::Applied {
                    kind: EntityKind::Order,
                    ..
                }
            ),
            "{event:?}"
        );
    }
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert!(
        rig.engine.client().stats().requests >= requests_before + 2,
        "the worker's reads go through the engine's client and its quota"
    );
    shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn ingest_webhook_is_the_same_store_step_and_refuses_malformed_bodies() {
    let rig = rig().await;
    for body in [
        json!({"context": {"id": 1}}),
        json!({"event": "order.change_order_status", "context": "1"}),
        json!([{"in_stock": 0}]),
        json!([{"sku": "", "in_stock": 5}]),
    ] {
        let err = rig.engine.ingest_webhook(&body).await.unwrap_err();
        assert!(err.to_string().contains("invalid webhook"), "{err}");
    }
    assert_eq!(
        stored(rig.engine.store()).await,
        0,
        "nothing collapsed into a shared key"
    );
    rig.engine.run_once().await.unwrap();
    assert!(
        rig.host.stock("main/").is_none(),
        "never a record keyed `main/`"
    );
}

// -------------------------------------------------------------------------------------------
// Stock deliveries

fn product(i: usize) -> CanonicalProduct {
    CanonicalProduct {
        local_id: format!("P-{i}"),
        sku: Some(format!("TEA-{i}")),
        name: format!("Чай {i}"),
        price: Some(dec("100")),
        ..CanonicalProduct::default()
    }
}

fn offer(i: usize) -> CanonicalOffer {
    CanonicalOffer {
        local_id: format!("V-{i}"),
        sku: format!("TEA-{i}"),
        product_sku: Some(format!("TEA-{i}")),
        price: Some(dec("100")),
        ..CanonicalOffer::default()
    }
}

/// `n` offers `TEA-1..=n` with stock 14 in `main`, synced; returns their KeyCRM offer ids.
async fn synced_catalogue(rig: &Rig<impl Store>, n: usize) -> Vec<i64> {
    for i in 1..=n {
        rig.host.put_product(product(i));
        rig.host.put_offer(offer(i));
        rig.host.put_stock(CanonicalStock {
            sku: format!("TEA-{i}"),
            warehouse: "main".into(),
            quantity: Decimal::from(14),
        });
    }
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let offers: Vec<types::Offer> = rig
        .engine
        .client()
        .offer_list()
        .send()
        .await
        .unwrap()
        .into_inner()
        .data;
    (1..=n)
        .map(|i| {
            offers
                .iter()
                .find(|o| o.sku.as_deref() == Some(&format!("TEA-{i}")))
                .and_then(|o| o.id)
                .unwrap()
        })
        .collect()
}

fn level(rig: &Rig<impl Store>, sku: &str) -> Decimal {
    rig.host.stock(&format!("main/{sku}")).unwrap().quantity
}

#[tokio::test]
async fn a_returning_stock_level_is_applied_and_a_redelivery_is_not() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 1).await;
    let receiver = rig.engine.webhook_receiver();
    let body = |q: u32| {
        serde_json::to_vec(
            &json!([{"offer_id": ids[0], "sku": "TEA-1", "in_stock": q, "in_reserve": 0}]),
        )
        .unwrap()
    };
    let q = query();
    for (quantity, duplicate) in [
        (118, false),
        (118, true),
        (117, false),
        (118, false),
        (118, true),
    ] {
        let accepted = receiver
            .receive(json_request(&body(quantity)).query(&q))
            .await
            .unwrap();
        assert_eq!(accepted.duplicate(), duplicate, "{quantity}");
        rig.engine.apply_inbox().await.unwrap();
        assert_eq!(level(&rig, "TEA-1"), Decimal::from(quantity));
    }
    let processed = rig.engine.store().counts().await.unwrap();
    assert_eq!(processed.inbox_failed, 0);
}

#[tokio::test]
async fn a_forged_stock_webhook_does_not_set_the_host_stock() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 1).await;
    assert_eq!(level(&rig, "TEA-1"), Decimal::from(14));
    let receiver = rig.engine.webhook_receiver();
    let q = query();
    rig.mock.clear_log();
    // An offer id KeyCRM does not have, and a real offer id under another offer's SKU.
    for forged in [
        json!([{"offer_id": 424242, "sku": "TEA-1", "in_stock": 0}]),
        json!([{"offer_id": ids[0] + 1000, "sku": "TEA-1", "in_stock": 0}]),
    ] {
        let body = serde_json::to_vec(&forged).unwrap();
        receiver
            .receive(json_request(&body).query(&q))
            .await
            .unwrap();
        let report = rig.engine.apply_inbox().await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(level(&rig, "TEA-1"), Decimal::from(14), "{forged}");
    }
    assert_eq!(
        rig.mock.count("offer_stock_list"),
        2,
        "each unmatched offer was read again from KeyCRM: {:?}",
        rig.mock.requests()
    );
    // A row whose SKU the offer id does not carry is read again too, and KeyCRM's level wins.
    rig.mock.crm().set_stock(ids[0], 1, 9);
    let body =
        serde_json::to_vec(&json!([{"offer_id": ids[0], "sku": "CUP-9", "in_stock": 0}])).unwrap();
    receiver
        .receive(json_request(&body).query(&q))
        .await
        .unwrap();
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(level(&rig, "TEA-1"), Decimal::from(9));
    assert!(rig.host.stock("main/CUP-9").is_none());
}

#[tokio::test]
async fn a_webhook_that_would_zero_a_warehouse_is_held_for_review() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 12).await;
    let mut events = Box::pin(rig.engine.subscribe());
    let rows: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"offer_id": id, "sku": format!("TEA-{}", i + 1), "in_stock": 0}))
        .collect();
    let body = serde_json::to_vec(&rows).unwrap();
    let accepted = rig
        .engine
        .webhook_receiver()
        .receive(json_request(&body).query(&query()))
        .await
        .unwrap();
    rig.engine.apply_inbox().await.unwrap();
    for i in 1..=12 {
        assert_eq!(level(&rig, &format!("TEA-{i}")), Decimal::from(14), "held");
    }
    let event = events.next().await.unwrap();
    match event {
        SyncEvent::Held { kind, reason, .. } => {
            assert_eq!(kind, EntityKind::Stock);
            assert!(reason.contains("would zero 12 of 12"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.engine.store().counts().await.unwrap().inbox_failed, 1);
    // An operator releases it after review.
    assert!(
        rig.engine
            .release_webhook(accepted.id.unwrap())
            .await
            .unwrap()
    );
    rig.engine.apply_inbox().await.unwrap();
    for i in 1..=12 {
        assert_eq!(level(&rig, &format!("TEA-{i}")), Decimal::ZERO, "released");
    }
}

#[tokio::test]
async fn a_pass_that_would_zero_a_warehouse_is_held_for_review() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 12).await;
    for id in &ids {
        rig.mock.crm().set_stock(*id, 1, 0);
    }
    let mut events = Box::pin(rig.engine.subscribe());
    rig.engine.full_resync().await.unwrap();
    for i in 1..=12 {
        assert_eq!(level(&rig, &format!("TEA-{i}")), Decimal::from(14), "held");
    }
    let mut held = false;
    while let Some(Some(event)) = futures::FutureExt::now_or_never(events.next()) {
        if let SyncEvent::Held { reason, .. } = event {
            assert!(reason.contains("would zero 12 of 12"), "{reason}");
            held = true;
        }
    }
    assert!(held, "an alert was published");
    let audit = rig.engine.store().list_audit(20).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "held"), "{audit:?}");
}

#[tokio::test(start_paused = true)]
async fn deliveries_that_arrive_during_a_commit_share_the_next_one() {
    let store = MemoryStore::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let receiver = WebhookReceiver::new(settings(), {
        let store = store.clone();
        let gate = gate.clone();
        move |items: Vec<NewInboxItem>| {
            let store = store.clone();
            let gate = gate.clone();
            Box::pin(async move {
                // A slow disk: the commit waits until the test opens the gate.
                gate.acquire().await.expect("open").forget();
                store.inbox_insert_batch(&items, chrono::Utc::now()).await
            })
        }
    });
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let body = status_body(i, 4, "2026-01-29 18:53:35");
                receiver
                    .receive(json_request(&body).query(&query()))
                    .await
                    .map(|a| a.duplicate())
            })
        })
        .collect();
    // Every sender is waiting for its answer (the paused clock moves only when all are idle).
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(stored(&store).await, 0, "no answer before the commit");
    gate.add_permits(1000);
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(false));
    }
    let stats = receiver.stats();
    assert_eq!(stats.stored, 50);
    assert!(stats.groups <= 2, "{stats:?}");
    assert_eq!(stored(&store).await, 50);
}
