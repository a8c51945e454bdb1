//! The engine's outbound path against answers it cannot use, ids the host does not have, and
//! the stack of a default test thread.
//!
//! KeyCRM's answers are data: an order fetched for an update, a created buyer or product may
//! come back as `{}` (a proxy, a changed API, a hostile server). Each such answer is a typed,
//! retried failure of that record, never a panic of the sync task.

use keycrm_sync::canonical::{CanonicalBuyer, CanonicalOrder, CanonicalProduct, Mappings};
use keycrm_sync::config::SyncConfig;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::{EntityKind, Snapshot};
use keycrm_sync::store::{Mapping, MemoryStore, SqliteStore, Store, SyncState};
use keycrm_sync::{SyncEngine, SyncError};
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{
    config_with, contact, engine_on, line, seed, simulator, unpaced_client, wiremock_client,
};

fn config() -> SyncConfig {
    config_with(&["new", "approved"], &[], &["main"])
}

fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        buyer: contact("Buyer", n),
        lines: vec![line(format!("SKU-{n}"), "Tea", 1, "10.00")],
        comment: Some(format!("note {n}")),
        ..support::order(n)
    }
}

/// A server that answers every list with an empty page, and `answer` to `verb route`
/// (mounted first, so it wins).
async fn server(verb: &str, route: &str, answer: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb))
        .and(path_regex(route))
        .respond_with(
            ResponseTemplate::new(if verb == "POST" { 201 } else { 200 }).set_body_json(answer),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "current_page": 1, "data": [], "last_page": 1, "per_page": 50, "total": 0,
            "next_page_url": null
        })))
        .with_priority(5)
        .mount(&server)
        .await;
    server
}

fn engine(server: &MockServer, host: &MemoryHost) -> SyncEngine<MemoryStore, MemoryHost> {
    SyncEngine::builder()
        .client(wiremock_client(server))
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config())
        .build()
        .unwrap()
}

async fn assert_failed_with(
    engine: &SyncEngine<MemoryStore, MemoryHost>,
    kind: EntityKind,
    local_id: &str,
    needle: &str,
) {
    let mapping = engine
        .store()
        .get_mapping(kind, local_id)
        .await
        .unwrap()
        .expect("the failure is recorded on the mapping");
    assert_eq!(mapping.state, SyncState::Error);
    let error = mapping.error.unwrap_or_default();
    assert!(error.contains(needle), "{error}");
    assert!(mapping.remote_id.is_none() || kind == EntityKind::Order);
}

#[tokio::test]
async fn an_empty_answer_to_the_order_read_before_an_update_is_a_typed_failure() {
    let server = server("GET", r"^/order/5$", json!({})).await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    host.put_order(order(1));
    let engine = engine(&server, &host);
    // The order is linked to KeyCRM's order 5, with an older base: an update is due.
    let mut mapping = Mapping::new(EntityKind::Order, "WMS-1");
    mapping.remote_id = Some(5);
    mapping.base = Some(Snapshot::default());
    engine.store().put_mapping(&mapping).await.unwrap();

    let report = engine
        .run_once()
        .await
        .expect("a bad answer fails one record, not the run");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_failed_with(&engine, EntityKind::Order, "WMS-1", "order without id").await;
    let outbox = engine.store().counts().await.unwrap();
    assert_eq!(outbox.outbox_depth, 1, "the order is retried later");
}

#[tokio::test]
async fn another_order_than_the_one_asked_for_is_refused() {
    let server = server("GET", r"^/order/5$", json!({"id": 6})).await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    host.put_order(order(1));
    let engine = engine(&server, &host);
    let mut mapping = Mapping::new(EntityKind::Order, "WMS-1");
    mapping.remote_id = Some(5);
    mapping.base = Some(Snapshot::default());
    engine.store().put_mapping(&mapping).await.unwrap();

    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_failed_with(&engine, EntityKind::Order, "WMS-1", "another order").await;
    // Nothing was written to order 6 (or 5).
    let writes = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() != "GET")
        .count();
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn an_empty_answer_to_a_buyer_create_is_a_typed_failure() {
    let server = server("POST", r"^/buyer$", json!({})).await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    host.put_buyer(CanonicalBuyer {
        local_id: "B-1".into(),
        name: "Buyer".into(),
        phones: vec!["+380501234567".into()],
        ..CanonicalBuyer::default()
    });
    let engine = engine(&server, &host);
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_failed_with(&engine, EntityKind::Buyer, "B-1", "buyer without id").await;
}

#[tokio::test]
async fn a_found_buyer_without_id_is_a_typed_failure() {
    let server = server(
        "GET",
        r"^/buyer$",
        json!({"current_page": 1, "data": [{"full_name": "x"}], "last_page": 1, "total": 1}),
    )
    .await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    host.put_buyer(CanonicalBuyer {
        local_id: "B-1".into(),
        name: "Buyer".into(),
        phones: vec!["+380501234567".into()],
        ..CanonicalBuyer::default()
    });
    let engine = engine(&server, &host);
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_failed_with(&engine, EntityKind::Buyer, "B-1", "buyer without id").await;
    let posts = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(posts, 0, "no second buyer is created");
}

#[tokio::test]
async fn an_empty_answer_to_a_product_create_is_a_typed_failure() {
    let server = server("POST", r"^/products$", json!({})).await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    host.put_product(CanonicalProduct {
        local_id: "P-1".into(),
        name: "No SKU".into(),
        ..CanonicalProduct::default()
    });
    let engine = engine(&server, &host);
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_failed_with(&engine, EntityKind::Product, "P-1", "product without id").await;
}

#[tokio::test]
async fn a_product_read_back_without_id_is_a_typed_failure() {
    // The look-up by SKU (through the offer) names a product without id.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/products/import"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"status": true})))
        .mount(&server)
        .await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    let engine = engine(&server, &host);
    Mock::given(method("GET"))
        .and(path("/offers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "current_page": 1, "last_page": 1, "total": 1,
            "data": [{"id": 1, "sku": "PS-1", "product": {"name": "x"}}]
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "current_page": 1, "data": [], "last_page": 1, "total": 0
        })))
        .with_priority(5)
        .mount(&server)
        .await;
    host.put_product(CanonicalProduct {
        local_id: "P-1".into(),
        sku: Some("PS-1".into()),
        name: "Tea".into(),
        ..CanonicalProduct::default()
    });
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_failed_with(&engine, EntityKind::Product, "P-1", "product without id").await;
}

// -------------------------------------------------------------------------------------------
// On-demand sync of ids the host does not have

#[tokio::test]
async fn syncing_an_id_the_host_does_not_have_is_not_found_and_changes_nothing() {
    let mock = simulator().await;
    let (host, engine) = engine_on(unpaced_client(&mock), MemoryStore::new(), config());
    host.put_order(order(1));
    engine.run_once().await.unwrap();
    let audit_before = engine.store().list_audit(1000).await.unwrap().len();
    mock.clear_log();

    let results = [
        (EntityKind::Order, engine.sync_order("WMS-404").await),
        (EntityKind::Buyer, engine.sync_buyer("B-404").await),
        (EntityKind::Product, engine.sync_product("P-404").await),
        (EntityKind::Offer, engine.sync_offer("O-404").await),
    ];
    for (kind, result) in results {
        match result {
            Err(SyncError::NotFound { kind: k, local_id }) => {
                assert_eq!(k, kind);
                assert!(local_id.ends_with("-404"));
            }
            other => panic!("{kind}: expected not found, got {other:?}"),
        }
    }
    let counts = engine.store().counts().await.unwrap();
    assert_eq!(counts.outbox_depth, 0, "nothing is queued");
    assert_eq!(counts.dead_letters, 0);
    let audit = engine.store().list_audit(1000).await.unwrap();
    assert_eq!(audit.len(), audit_before, "nothing is audited: {audit:?}");
    for (kind, id) in [(EntityKind::Order, "WMS-404"), (EntityKind::Buyer, "B-404")] {
        assert!(
            engine
                .store()
                .get_mapping(kind, id)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(mock.request_count(), 0, "KeyCRM is not asked");
    // A record the host has still syncs.
    engine.sync_order("WMS-1").await.unwrap();
}

// -------------------------------------------------------------------------------------------
// Stack

/// The futures a host awaits are small: what a run does is boxed, so that embedding the engine
/// in a default `#[tokio::test]` thread (2 MiB) in a debug build leaves the stack to the host.
#[tokio::test]
async fn engine_futures_are_small() {
    let mock = simulator().await;
    let (_host, engine) = engine_on(
        unpaced_client(&mock),
        SqliteStore::open_in_memory().unwrap(),
        config(),
    );
    let sizes = [
        ("run_once", std::mem::size_of_val(&engine.run_once())),
        ("full_resync", std::mem::size_of_val(&engine.full_resync())),
        ("sync_order", std::mem::size_of_val(&engine.sync_order("x"))),
        (
            "ingest_webhook",
            std::mem::size_of_val(&engine.ingest_webhook(&serde_json::Value::Null)),
        ),
    ];
    for (name, size) in sizes {
        assert!(size <= 2 * 1024, "{name}'s future is {size} bytes");
    }
}

/// A full sync (every kind, both ways, SQLite) awaited directly in a plain
/// `#[tokio::test]`: current-thread runtime on the test thread's default stack.
#[tokio::test]
async fn a_full_sync_runs_on_a_default_test_thread() {
    let mock = simulator().await;
    mock.seed(seed(20, 20, 30));
    let (host, engine) = engine_on(
        unpaced_client(&mock),
        SqliteStore::open_in_memory().unwrap(),
        config(),
    );
    for n in 1..=20 {
        host.put_order(order(n));
    }
    // All the engine's entry points at once, as a host's handlers would hold them.
    let (full, one, again) = tokio::join!(
        engine.full_resync(),
        engine.sync_order("WMS-1"),
        engine.run_once()
    );
    let full = full.unwrap();
    one.unwrap();
    again.unwrap();
    assert!(full.pulled > 0 && full.pushed > 0, "{full:?}");
    assert!(host.orders().len() > 20);
}
