//! Reconciliation against real-shaped and hostile answers: a record of an unknown shape is
//! quarantined while the rest of its page is applied; records that exist on both sides meet
//! as a first link, not as conflicts; KeyCRM's messages are bounded wherever they flow.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use keycrm_api::mock::KeyCrmMock;
use keycrm_api::{Decimal, Paginate, types};
use keycrm_sync::canonical::{CanonicalOffer, CanonicalOrder};
use keycrm_sync::config::SyncConfig;
use keycrm_sync::engine::{FIRST_LINK_ACTION, SyncEvent};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::{EntityKind, Snapshot};
use keycrm_sync::plan::{Side, SourceOfTruth};
use keycrm_sync::store::{Mapping, MemoryStore, Store, SyncState};
use keycrm_sync::{SyncEngine, SyncError};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{config_with, engine_on, seed, simulator, unpaced_client, wiremock_client};

fn config() -> SyncConfig {
    config_with(&["new", "shipped"], &[], &["main"])
}

fn page(data: Vec<Value>) -> Value {
    let total = data.len();
    json!({
        "current_page": 1,
        "data": data,
        "last_page": 1,
        "next_page_url": null,
        "per_page": 50,
        "total": total,
    })
}

async fn serve(server: &MockServer, route: &str, body: Value) {
    Mock::given(method("GET"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

/// A wiremock KeyCRM whose order and offer lists are given; every other list is empty.
async fn serve_lists(server: &MockServer, orders: Vec<Value>, offers: Vec<Value>) {
    server.reset().await;
    serve(server, "/order", page(orders)).await;
    serve(server, "/offers", page(offers)).await;
    for route in ["/order/status", "/buyer", "/products", "/offers/stocks"] {
        serve(server, route, page(vec![])).await;
    }
}

fn wiremock_engine(server: &MockServer, config: SyncConfig) -> SyncEngine<MemoryStore, MemoryHost> {
    engine_on(wiremock_client(server), MemoryStore::new(), config).1
}

fn remote_order(id: i64, grand_total: Value) -> Value {
    json!({
        "id": id,
        "source_uuid": format!("CRM-{id}"),
        "status_id": 1,
        "grand_total": grand_total,
        "ordered_at": "2026-01-05 10:00:00",
        "updated_at": "2026-01-05 10:00:00",
        "products": [],
        "payments": [],
    })
}

fn remote_offer(id: i64, price: Value) -> Value {
    json!({"id": id, "product_id": id, "sku": format!("SKU-{id}"), "price": price, "purchased_price": "5"})
}

#[tokio::test]
async fn a_record_of_an_unknown_shape_is_quarantined_and_the_rest_of_its_page_applied() {
    let server = MockServer::start().await;
    serve_lists(
        &server,
        vec![
            remote_order(1, json!("10.50")),
            remote_order(2, json!({"amount": "10.50", "currency": "UAH"})),
            remote_order(3, json!(12)),
        ],
        vec![
            remote_offer(11, json!("99")),
            remote_offer(12, json!({"uah": 99})),
            remote_offer(13, json!(100)),
        ],
    )
    .await;
    let engine = wiremock_engine(&server, config());
    // An offer linked earlier that KeyCRM no longer lists: only a complete pass may drop it.
    let mut gone = Mapping::new(EntityKind::Offer, "V-GONE");
    gone.remote_id = Some(99);
    gone.state = SyncState::Synced;
    gone.base = Some(Snapshot::default());
    engine.store().put_mapping(&gone).await.unwrap();
    // Orders are read incrementally from a cursor: an `updated_between` and a
    // `created_between` pass, both meeting the broken order.
    let cursor = "2026-01-01T00:00:00+00:00";
    engine
        .store()
        .set_cursor(EntityKind::Order, "remote", cursor, chrono::Utc::now())
        .await
        .unwrap();

    let report = engine
        .run_once()
        .await
        .expect("one broken record fails no run");
    assert!(report.full_pass);
    assert_eq!(
        report.quarantined, 3,
        "the order twice, the offer once: {report:?}"
    );
    let order_pages = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/order")
        .count();
    assert_eq!(order_pages, 2, "two order passes");
    let host = engine.host();
    let numbers: BTreeSet<String> = host.orders().into_iter().filter_map(|o| o.number).collect();
    assert_eq!(
        numbers,
        BTreeSet::from(["CRM-1".to_string(), "CRM-3".to_string()]),
        "the rest of the page is applied"
    );
    let offer_skus: Vec<String> = engine
        .store()
        .list_mappings(EntityKind::Offer, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.local_id)
        .collect();
    assert_eq!(
        offer_skus.len(),
        3,
        "offers 11, 13 and the old one: {offer_skus:?}"
    );

    // Visible in status: kind, remote id, JSON path, operation.
    let status = engine.status().await.unwrap();
    let mut seen: Vec<(EntityKind, Option<i64>, String, String)> = status
        .quarantined
        .iter()
        .map(|q| (q.kind, q.remote_id, q.path.clone(), q.operation.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                EntityKind::Order,
                Some(2),
                "grand_total".into(),
                "order_list".into()
            ),
            (
                EntityKind::Offer,
                Some(12),
                "price".into(),
                "offer_list".into()
            ),
        ]
    );
    // And in the audit log, once.
    let audit = engine.store().list_audit(100).await.unwrap();
    let quarantined: Vec<_> = audit.iter().filter(|a| a.action == "quarantined").collect();
    assert_eq!(quarantined.len(), 2, "{audit:?}");
    assert!(quarantined.iter().any(|a| a.kind == EntityKind::Order
        && a.local_id == "remote:2"
        && a.detail.contains("grand_total")
        && a.detail.contains("order_list")));

    // The pass was not complete: no tombstone, no cursor.
    assert!(
        engine
            .store()
            .get_mapping(EntityKind::Offer, "V-GONE")
            .await
            .unwrap()
            .is_some(),
        "an incomplete pass creates no tombstones"
    );
    assert_eq!(
        engine
            .store()
            .get_cursor(EntityKind::Order, "remote")
            .await
            .unwrap()
            .as_deref(),
        Some(cursor),
        "an incomplete pass keeps its cursor"
    );

    // Seen again: still quarantined, not audited twice.
    engine.full_resync().await.unwrap();
    let audit = engine.store().list_audit(100).await.unwrap();
    assert_eq!(
        audit.iter().filter(|a| a.action == "quarantined").count(),
        2
    );
    assert_eq!(engine.status().await.unwrap().quarantined.len(), 2);

    // KeyCRM fixes its data: the records leave the quarantine, the pass is complete and the
    // vanished offer becomes a tombstone.
    serve_lists(
        &server,
        vec![
            remote_order(1, json!("10.50")),
            remote_order(2, json!("10.50")),
            remote_order(3, json!(12)),
        ],
        vec![
            remote_offer(11, json!("99")),
            remote_offer(12, json!("99")),
            remote_offer(13, json!(100)),
        ],
    )
    .await;
    let report = engine.full_resync().await.unwrap();
    assert_eq!(report.quarantined, 0, "{report:?}");
    assert!(engine.status().await.unwrap().quarantined.is_empty());
    assert_eq!(host.orders().len(), 3);
    assert!(
        engine
            .store()
            .get_mapping(EntityKind::Offer, "V-GONE")
            .await
            .unwrap()
            .is_none(),
        "a complete pass turns absence into a tombstone"
    );
    assert_ne!(
        engine
            .store()
            .get_cursor(EntityKind::Order, "remote")
            .await
            .unwrap()
            .as_deref(),
        Some(cursor),
        "a complete pass moves the cursor"
    );
}

/// A simulator seeded with a catalogue, and a host that has the same offers (by SKU) at other
/// prices, as when an existing shop connects an existing KeyCRM account.
async fn first_contact(
    config: SyncConfig,
) -> (
    KeyCrmMock,
    SyncEngine<MemoryStore, MemoryHost>,
    Vec<types::Offer>,
) {
    let mock = simulator().await;
    mock.seed(seed(40, 0, 0));
    let client = unpaced_client(&mock);
    let offers: Vec<types::Offer> = client
        .offer_list()
        .items()
        .map(|o| o.unwrap())
        .collect()
        .await;
    assert!(offers.len() >= 40, "{} offers", offers.len());
    let (host, engine) = engine_on(client, MemoryStore::new(), config);
    for o in &offers {
        host.put_offer(CanonicalOffer {
            local_id: format!("V-{}", o.sku.as_deref().unwrap()),
            sku: o.sku.clone().unwrap(),
            product_sku: None,
            price: Some(Decimal::new(
                o.price.unwrap().value() + rust_decimal::Decimal::ONE,
            )),
            purchased_price: Some(Decimal::new(
                o.purchased_price.unwrap_or(Decimal::ZERO).value() + rust_decimal::Decimal::TWO,
            )),
            updated_at: None,
        });
    }
    (mock, engine, offers)
}

async fn assert_first_links(engine: &SyncEngine<MemoryStore, MemoryHost>, offers: &[types::Offer]) {
    let conflicts = engine.store().list_conflicts(None, 100_000).await.unwrap();
    assert!(
        conflicts.is_empty(),
        "first contact is no conflict: {} logged",
        conflicts.len()
    );
    let audit = engine.store().list_audit(100_000).await.unwrap();
    let links: Vec<String> = audit
        .iter()
        .filter(|a| a.kind == EntityKind::Offer && a.action == FIRST_LINK_ACTION)
        .map(|a| a.local_id.clone())
        .collect();
    let unique: BTreeSet<&String> = links.iter().collect();
    assert_eq!(links.len(), offers.len(), "one first link per offer");
    assert_eq!(unique.len(), offers.len());
}

#[tokio::test]
async fn first_contact_follows_the_source_of_truth_and_is_no_conflict() {
    // Default: the host is right about prices.
    let (mock, engine, offers) = first_contact(config()).await;
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.conflicts, 0, "{report:?}");
    assert_first_links(&engine, &offers).await;
    let client = engine.client().clone();
    let now: BTreeMap<String, types::Offer> = client
        .offer_list()
        .items()
        .map(|o| o.unwrap())
        .map(|o| (o.sku.clone().unwrap(), o))
        .collect()
        .await;
    for o in &offers {
        let sku = o.sku.clone().unwrap();
        let local = engine.host().offer(&format!("V-{sku}")).unwrap();
        let expected = Decimal::new(o.price.unwrap().value() + rust_decimal::Decimal::ONE);
        assert_eq!(
            local.price,
            Some(expected),
            "{sku}: the host keeps its price"
        );
        assert_eq!(
            now[&sku].price,
            Some(expected),
            "{sku}: KeyCRM takes the host's price"
        );
    }
    assert!(mock.count("offer_update_batch") >= 1);
    // A second run finds nothing to do.
    let again = engine.run_once().await.unwrap();
    assert_eq!(again.conflicts, 0);
    assert_eq!(again.pushed, 0, "{again:?}");

    // Configured the other way: KeyCRM is right about offers.
    let mut flipped = config();
    flipped
        .first_contact
        .insert(EntityKind::Offer, SourceOfTruth::new(Side::Remote));
    let (mock, engine, offers) = first_contact(flipped).await;
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.conflicts, 0, "{report:?}");
    assert_first_links(&engine, &offers).await;
    for o in &offers {
        let sku = o.sku.clone().unwrap();
        let local = engine.host().offer(&format!("V-{sku}")).unwrap();
        assert_eq!(local.price, o.price, "{sku}: the host takes KeyCRM's price");
    }
    assert_eq!(mock.count("offer_update_batch"), 0, "nothing to send");
}

#[tokio::test]
async fn keycrm_messages_are_bounded_in_errors_events_and_the_audit_log() {
    let server = MockServer::start().await;
    let email = "olena.petrenko@example.com";
    let long = format!("{} {email}", "The given data was invalid.".repeat(200));
    serve_lists(&server, vec![], vec![]).await;
    // Reading orders fails with a huge message: the run's error is bounded.
    Mock::given(method("GET"))
        .and(path("/order"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": long})))
        .with_priority(1)
        .mount(&server)
        .await;
    let engine = wiremock_engine(&server, config());
    let err = engine.run_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Api(_)), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.chars().count() <= 512 + 16,
        "{} characters",
        shown.chars().count()
    );
    assert!(!shown.contains(email), "{shown}");

    // Creating an order fails with a huge validation list naming customer data.
    serve_lists(&server, vec![], vec![]).await;
    let errors: BTreeMap<String, Vec<String>> = (0..300)
        .map(|n| {
            (
                format!("buyer.{n}.email"),
                vec![format!("The e-mail {email} is taken.")],
            )
        })
        .collect();
    for route in ["/order", "/order/import"] {
        Mock::given(method("POST"))
            .and(path(route))
            .respond_with(
                ResponseTemplate::new(422)
                    .set_body_json(json!({"message": long, "errors": errors})),
            )
            .mount(&server)
            .await;
    }
    let engine = wiremock_engine(&server, config());
    engine.host().put_order(CanonicalOrder {
        local_id: "W-1".into(),
        number: Some("W-1".into()),
        status: Some("new".into()),
        buyer: keycrm_sync::canonical::CanonicalContact {
            name: Some("Олена Петренко".into()),
            phone: None,
            email: Some(email.into()),
        },
        ..CanonicalOrder::default()
    });
    let mut events = Box::pin(engine.subscribe());
    let report = engine.run_once().await.unwrap();
    assert!(report.failed >= 1, "{report:?}");
    let mut failures = 0;
    while let Some(Some(event)) = futures::FutureExt::now_or_never(events.next()) {
        if let SyncEvent::Failed { error, .. } = event {
            failures += 1;
            assert!(
                error.chars().count() <= 512 + 1,
                "{} characters",
                error.chars().count()
            );
        }
    }
    assert!(failures >= 1);
    for entry in engine.store().list_audit(100).await.unwrap() {
        assert!(entry.detail.chars().count() <= 512 + 1, "{entry:?}");
    }
    let dead = engine
        .store()
        .get_mapping(EntityKind::Order, "W-1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        dead.error.as_deref().unwrap_or_default().chars().count() <= 512 + 16,
        "{:?}",
        dead.error
    );
}

/// An order that exists on both sides (the host's number is KeyCRM's `source_uuid`) with
/// another status and buyer name, met for the first time.
async fn order_first_contact(config: SyncConfig) -> SyncEngine<MemoryStore, MemoryHost> {
    let server = MockServer::start().await;
    let mut order = remote_order(1, json!("10"));
    order["source_uuid"] = json!("SHOP-1");
    order["status_id"] = json!(4);
    order["buyer"] = json!({"id": 3, "full_name": "Olena Petrenko"});
    serve_lists(&server, vec![order], vec![]).await;
    let engine = wiremock_engine(&server, config);
    engine.host().put_order(CanonicalOrder {
        local_id: "SHOP-1".into(),
        number: Some("SHOP-1".into()),
        status: Some("new".into()),
        buyer: keycrm_sync::canonical::CanonicalContact {
            name: Some("Олена Петренко".into()),
            ..Default::default()
        },
        ..CanonicalOrder::default()
    });
    engine.run_once().await.unwrap();
    // The server must outlive the run only.
    drop(server);
    engine
}

#[tokio::test]
async fn an_order_met_on_both_sides_takes_keycrms_status_by_default() {
    let engine = order_first_contact(config()).await;
    let order = engine.host().orders().pop().unwrap();
    assert_eq!(
        order.status.as_deref(),
        Some("shipped"),
        "KeyCRM is right about the status"
    );
    assert!(
        engine
            .store()
            .list_conflicts(None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let audit = engine.store().list_audit(10).await.unwrap();
    let links: Vec<_> = audit
        .iter()
        .filter(|a| a.action == FIRST_LINK_ACTION)
        .collect();
    assert_eq!(links.len(), 1, "{audit:?}");
    assert_eq!(links[0].local_id, "SHOP-1");
    assert!(
        links[0].detail.contains("status_id from KeyCRM"),
        "{}",
        links[0].detail
    );
    assert!(
        links[0].detail.contains("buyer.full_name"),
        "{}",
        links[0].detail
    );
    assert!(
        !links[0].detail.contains("Olena") && !links[0].detail.contains("Олена"),
        "no customer data in the audit log: {}",
        links[0].detail
    );

    // Configured the other way for the status field.
    let mut host_status = config();
    host_status.first_contact.insert(
        EntityKind::Order,
        SourceOfTruth::new(Side::Remote).with_field("status_id", Side::Local),
    );
    let engine = order_first_contact(host_status).await;
    let order = engine.host().orders().pop().unwrap();
    assert_eq!(
        order.status.as_deref(),
        Some("new"),
        "the host is right about the status"
    );
    assert_eq!(order.buyer.name.as_deref(), Some("Olena Petrenko"));
    assert!(
        engine
            .store()
            .list_conflicts(None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
