//! The sync engine against the KeyCRM simulator: convergence both ways, request economy,
//! conflicts, interruption and faults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use keycrm_api::clock::VirtualClock;
use keycrm_api::mock::{KeyCrmMock, KeyCrmMockBuilder, Quota, SeedConfig};
use keycrm_api::{Client, Decimal, Paginate, Timestamp, types};
use keycrm_sync::canonical::{
    self, CanonicalBuyer, CanonicalContact, CanonicalLine, CanonicalOffer, CanonicalOrder,
    CanonicalPayment, CanonicalProduct, CanonicalStock, Mappings, PaymentStatus,
};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::engine::FULL_PASS_EVERY;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::{EntityKind, Fields};
use keycrm_sync::plan::{Policy, Resolution, Side};
use keycrm_sync::store::{MemoryStore, SqliteStore, Store, SyncState};
use keycrm_sync::{SyncEngine, SyncEngineBuilder};

fn config() -> SyncConfig {
    SyncConfig {
        api_key: Secret::new("test"),
        source_id: Some(1),
        status_ids: BTreeMap::from([
            ("new".to_string(), 1),
            ("approved".to_string(), 2),
            ("packing".to_string(), 3),
            ("shipped".to_string(), 4),
            ("completed".to_string(), 5),
            ("canceled".to_string(), 6),
        ]),
        payment_method_ids: BTreeMap::from([
            ("cod".to_string(), 1),
            ("invoice".to_string(), 2),
            ("card".to_string(), 3),
            ("apple_pay".to_string(), 4),
            ("cash".to_string(), 5),
        ]),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1), ("lviv".to_string(), 2)]),
        ..SyncConfig::default()
    }
}

struct Rig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: SyncEngine<MemoryStore, MemoryHost>,
}

/// The same on SQLite (in memory).
struct SqliteRig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: SyncEngine<SqliteStore, MemoryHost>,
}

type Builder = SyncEngineBuilder<MemoryStore, MemoryHost>;

async fn rig() -> Rig {
    rig_with(KeyCrmMock::builder(), config(), |b| b).await
}

/// A rig on a simulator from `mock` (the quota made unlimited) with `config`, and the engine
/// builder adjusted by `adjust` (policies, clock).
async fn rig_with(
    mock: KeyCrmMockBuilder,
    config: SyncConfig,
    adjust: impl FnOnce(Builder) -> Builder,
) -> Rig {
    let mock = mock.quota(Quota::unlimited()).start().await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    let host = MemoryHost::new(Mappings::from_config(&config));
    let builder = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config);
    let engine = adjust(builder).build().unwrap();
    Rig { mock, host, engine }
}

/// A client for fault tests: no pacing, every wait (retry backoff, `Retry-After`) instant,
/// and a short timeout so that a lost response costs little.
fn impatient_client(mock: &KeyCrmMock) -> Client {
    mock.client_builder()
        .requests_per_minute(0)
        .clock(Arc::new(VirtualClock::new()))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// An outbox clock the test moves forward, so that failed items are retried at once
/// instead of after the engine's backoff (30 s and more).
#[derive(Clone, Default)]
struct Skew(Arc<AtomicI64>);

impl Skew {
    fn clock(&self) -> impl Fn() -> DateTime<Utc> + Send + Sync + 'static {
        let offset = self.0.clone();
        move || Utc::now() + chrono::Duration::seconds(offset.load(Ordering::Relaxed))
    }

    /// Past every backoff the engine uses (at most an hour).
    fn pass_backoff(&self) {
        self.0.fetch_add(2 * 3600, Ordering::Relaxed);
    }
}

fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("WMS-{n}"),
        number: Some(format!("WMS-{n}")),
        status: Some("new".into()),
        buyer: CanonicalContact {
            name: Some(format!("Покупець {n}")),
            phone: Some(format!("+38050{n:07}")),
            email: None,
        },
        lines: vec![CanonicalLine {
            sku: format!("SKU-{}", n % 7),
            name: "Чай".into(),
            quantity: Decimal::from(2),
            price: "149.90".parse().unwrap(),
        }],
        ..CanonicalOrder::default()
    }
}

fn writes(mock: &KeyCrmMock) -> usize {
    mock.requests().iter().filter(|r| r.method != "GET").count()
}

fn mappings() -> Mappings {
    Mappings::from_config(&config())
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// An order whose host id differs from its number (the `source_uuid`).
fn numbered_order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("ord-{n}"),
        ..order(n)
    }
}

/// KeyCRM's order as the simulator holds it (every relation), as canonical fields.
fn remote_order(mock: &KeyCrmMock, id: i64) -> Fields {
    let json = mock
        .crm()
        .order(id)
        .unwrap_or_else(|| panic!("KeyCRM has no order {id}"));
    let order: types::Order = serde_json::from_value(json).unwrap();
    canonical::order_fields_from_remote(&order)
}

/// KeyCRM's order ids by `source_uuid`.
fn orders_by_uuid(mock: &KeyCrmMock) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for id in mock.crm().order_ids() {
        let order = mock.crm().order(id).unwrap();
        if let Some(uuid) = order["source_uuid"].as_str() {
            out.entry(uuid.to_string()).or_default().push(id);
        }
    }
    out
}

async fn remote_id<S: Store>(store: &S, kind: EntityKind, local_id: &str) -> i64 {
    store
        .get_mapping(kind, local_id)
        .await
        .unwrap()
        .and_then(|m| m.remote_id)
        .unwrap_or_else(|| panic!("{kind} {local_id} is not mapped"))
}

/// Every host order equals its KeyCRM order field by field, and the two sides hold the same
/// orders (one KeyCRM order per host order, none more).
async fn assert_orders_agree<S: Store>(mock: &KeyCrmMock, host: &MemoryHost, store: &S) {
    let m = mappings();
    let mut mapped = std::collections::BTreeSet::new();
    let host_orders = host.orders();
    for order in &host_orders {
        let id = remote_id(store, EntityKind::Order, &order.local_id).await;
        let local = canonical::order_fields_from_local(order, &m).unwrap();
        assert_eq!(
            local,
            remote_order(mock, id),
            "host order {} vs KeyCRM order {id}",
            order.local_id
        );
        assert!(mapped.insert(id), "KeyCRM order {id} is mapped twice");
    }
    let all: std::collections::BTreeSet<i64> = mock.crm().order_ids().into_iter().collect();
    assert_eq!(mapped, all, "the host and KeyCRM hold the same orders");
}

async fn remote_buyer(client: &Client, id: i64) -> Fields {
    let buyer = client
        .buyer_get()
        .buyer_id(id)
        .send()
        .await
        .unwrap()
        .into_inner();
    canonical::buyer_fields_from_remote(&buyer)
}

async fn remote_offer(client: &Client, sku: &str) -> types::Offer {
    let offers = client
        .offer_list()
        .filter_sku(sku)
        .send()
        .await
        .unwrap()
        .into_inner()
        .data;
    let mut found: Vec<types::Offer> = offers
        .into_iter()
        .filter(|o| o.sku.as_deref() == Some(sku))
        .collect();
    assert_eq!(found.len(), 1, "one offer with SKU {sku}");
    found.remove(0)
}

/// Stock of the offers with these SKUs: (warehouse id, SKU) -> quantity.
async fn remote_stock(client: &Client, skus: &[&str]) -> BTreeMap<(i64, String), Decimal> {
    let stocks: Vec<types::OfferStock> = client
        .offer_stock_list()
        .filter_details(true)
        .filter_offers_sku(skus.join(","))
        .items()
        .try_collect()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for s in stocks {
        for row in s.warehouse.iter().flatten() {
            out.insert(
                (row.id.unwrap(), s.sku.clone().unwrap()),
                row.quantity.unwrap_or(Decimal::ZERO),
            );
        }
    }
    out
}

/// Runs until a run finds nothing to collect, apply or push (at most `max` runs), each
/// without failures; returns how many runs it took.
async fn settle<S: Store>(engine: &SyncEngine<S, MemoryHost>, max: usize) -> usize {
    for n in 1..=max {
        let report = engine.run_once().await.unwrap();
        assert_eq!(report.failed, 0, "run {n}: {report:?}");
        if report.collected == 0 && report.applied == 0 && report.pushed == 0 {
            return n;
        }
    }
    panic!("still busy after {max} runs");
}

/// Runs incrementally until the run that reconciles the catalogue and stock in full.
async fn run_to_full_pass<S: Store>(engine: &SyncEngine<S, MemoryHost>) {
    for _ in 0..FULL_PASS_EVERY {
        let report = engine.run_once().await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        if report.full_pass {
            return;
        }
    }
    panic!("no full pass within {FULL_PASS_EVERY} runs");
}

#[tokio::test]
async fn host_orders_reach_keycrm_and_a_second_run_writes_nothing() {
    let rig = rig().await;
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(first.pushed, 3, "{first:?}");
    assert_eq!(
        rig.mock.count("order_import"),
        1,
        "three new orders go out in one import"
    );
    let uuids: Vec<String> = rig
        .mock
        .crm()
        .order_ids()
        .into_iter()
        .filter_map(|id| rig.mock.crm().order(id))
        .filter_map(|o| o["source_uuid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(uuids.len(), 3);

    rig.mock.clear_log();
    let second = rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
    assert_eq!(second.pushed, 0);
    assert_eq!(second.failed, 0);
}

#[tokio::test]
async fn a_status_changed_in_the_crm_comes_back_to_the_host() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let remote_id = rig.mock.crm().order_ids()[0];
    rig.mock.crm().set_order_status(remote_id, 4);
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped"),
        "{report:?}"
    );
    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "the applied change is not echoed back"
    );
}

#[tokio::test]
async fn a_local_status_change_is_pushed() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("packing".into()));
    rig.engine.run_once().await.unwrap();
    let remote_id = rig.mock.crm().order_ids()[0];
    assert_eq!(rig.mock.crm().order(remote_id).unwrap()["status_id"], 3);
}

#[tokio::test]
async fn buyers_are_matched_by_phone_before_creating() {
    let rig = rig().await;
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Олена Коваленко".into(),
        phones: vec!["+380501112233".into()],
        ..CanonicalBuyer::default()
    });
    rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("buyer_create"), 1);
    rig.mock.clear_log();
    rig.host.edit_buyer("C-1", |b| b.note = Some("VIP".into()));
    rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("buyer_update"), 1);
    assert_eq!(rig.mock.count("buyer_create"), 0);
}

#[tokio::test]
async fn stock_goes_out_in_one_request_per_warehouse() {
    let rig = rig().await;
    let seeded = rig.mock.seed(keycrm_api::mock::SeedConfig {
        products: 30,
        ..Default::default()
    });
    assert!(!seeded.offers.is_empty());
    let client = rig.engine.client().clone();
    let offers = client
        .offer_list()
        .limit(std::num::NonZeroU64::new(50).unwrap())
        .send()
        .await
        .unwrap()
        .into_inner();
    let skus: Vec<String> = offers
        .data
        .iter()
        .filter_map(|o| o.sku.clone())
        .take(20)
        .collect();
    for (i, sku) in skus.iter().enumerate() {
        for wh in ["main", "lviv"] {
            rig.host.put_stock(CanonicalStock {
                sku: sku.clone(),
                warehouse: wh.into(),
                quantity: Decimal::from(i as i64 + 1),
            });
        }
    }
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(rig.mock.count("offer_stock_update"), 2);
}

// -------------------------------------------------------------------------------------------
// Convergence both ways

#[tokio::test]
async fn orders_converge_both_ways() {
    let rig = rig().await;
    // Orders a manager took in KeyCRM before the engine started.
    let seeded = rig.mock.seed(SeedConfig {
        buyers: 3,
        companies: 0,
        products: 3,
        orders: 3,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    for id in &seeded.orders {
        assert!(
            rig.host.order(&format!("crm-{id}")).is_some(),
            "KeyCRM order {id} reached the host"
        );
    }
    let store = rig.engine.store();
    let two = remote_id(store, EntityKind::Order, "WMS-2").await;
    let crm_one = seeded.orders[0];

    // Both sides change: a new local order, a local status, comment and tracking number; in
    // KeyCRM a status, a payment and a comment.
    rig.host.put_order(order(4));
    assert!(rig.host.edit_order("WMS-1", |o| {
        o.status = Some("approved".into());
        o.comment = Some("Пакувати обережно".into());
        o.shipping.tracking_code = Some("20450000000001".into());
    }));
    rig.mock.crm().set_order_status(two, 4);
    rig.mock.crm().add_order_payment(two, dec("299.80"), "paid");
    rig.mock.crm().edit_order(
        crm_one,
        serde_json::json!({"manager_comment": "Дзвонити після 18:00"}),
    );
    settle(&rig.engine, 6).await;

    let one = remote_id(store, EntityKind::Order, "WMS-1").await;
    let remote_one = remote_order(&rig.mock, one);
    assert_eq!(remote_one["status_id"], serde_json::json!(2));
    assert_eq!(
        remote_one["manager_comment"],
        serde_json::json!("Пакувати обережно")
    );
    assert_eq!(
        remote_one["shipping.tracking_code"],
        serde_json::json!("20450000000001")
    );
    let host_two = rig.host.order("WMS-2").unwrap();
    assert_eq!(host_two.status.as_deref(), Some("shipped"));
    assert_eq!(
        host_two.payments,
        vec![CanonicalPayment {
            method: "cod".into(),
            amount: dec("299.8"),
            status: PaymentStatus::Paid,
            reference: None,
        }]
    );
    assert_eq!(
        rig.host
            .order(&format!("crm-{crm_one}"))
            .unwrap()
            .comment
            .as_deref(),
        Some("Дзвонити після 18:00")
    );
    let uuids = orders_by_uuid(&rig.mock);
    for n in 1..=4 {
        assert_eq!(
            uuids[&format!("WMS-{n}")].len(),
            1,
            "WMS-{n} once in KeyCRM"
        );
    }
    assert_orders_agree(&rig.mock, &rig.host, store).await;

    rig.mock.clear_log();
    let quiet = rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
    assert_eq!(
        (quiet.pushed, quiet.applied, quiet.failed),
        (0, 0, 0),
        "{quiet:?}"
    );
}

#[tokio::test]
async fn buyers_converge_both_ways() {
    let rig = rig().await;
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Олена Коваленко".into(),
        phones: vec!["+38 (050) 111-22-33".into()],
        emails: vec!["Olena@Example.com".into()],
        ..CanonicalBuyer::default()
    });
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-2".into(),
        name: "Тарас Шевчук".into(),
        phones: vec!["+380672223344".into()],
        ..CanonicalBuyer::default()
    });
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(rig.mock.count("buyer_create"), 2);
    let store = rig.engine.store();
    let c1 = remote_id(store, EntityKind::Buyer, "C-1").await;
    let c2 = remote_id(store, EntityKind::Buyer, "C-2").await;

    assert!(rig.host.edit_buyer("C-1", |b| {
        b.note = Some("VIP".into());
        b.emails.push("olena.work@example.com".into());
    }));
    rig.mock.crm().edit_buyer(
        c2,
        serde_json::json!({"note": "Оптовий клієнт", "email": ["taras@example.com"]}),
    );
    settle(&rig.engine, 6).await;

    let client = rig.engine.client();
    let remote_c1 = remote_buyer(client, c1).await;
    assert_eq!(remote_c1["note"], serde_json::json!("VIP"));
    assert_eq!(
        remote_c1["email.1"],
        serde_json::json!("olena.work@example.com")
    );
    let host_c2 = rig.host.buyer("C-2").unwrap();
    assert_eq!(host_c2.note.as_deref(), Some("Оптовий клієнт"));
    assert_eq!(host_c2.emails, vec!["taras@example.com".to_string()]);
    assert_eq!(host_c2.phones, vec!["+380672223344".to_string()]);

    let remote_all: Vec<types::Buyer> = client.buyer_list().items().try_collect().await.unwrap();
    assert_eq!(remote_all.len(), rig.host.buyers().len());
    for buyer in rig.host.buyers() {
        let id = remote_id(store, EntityKind::Buyer, &buyer.local_id).await;
        assert_eq!(
            canonical::buyer_fields_from_local(&buyer),
            remote_buyer(client, id).await,
            "buyer {}",
            buyer.local_id
        );
    }

    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
}

fn product(local_id: &str, sku: &str, name: &str, price: &str) -> CanonicalProduct {
    CanonicalProduct {
        local_id: local_id.into(),
        sku: Some(sku.into()),
        name: name.into(),
        description: Some(format!("{name}: опис")),
        price: Some(dec(price)),
        ..CanonicalProduct::default()
    }
}

fn offer(local_id: &str, sku: &str, price: &str, purchased: &str) -> CanonicalOffer {
    CanonicalOffer {
        local_id: local_id.into(),
        sku: sku.into(),
        product_sku: Some(sku.into()),
        price: Some(dec(price)),
        purchased_price: Some(dec(purchased)),
        ..CanonicalOffer::default()
    }
}

fn stock(warehouse: &str, sku: &str, quantity: i64) -> CanonicalStock {
    CanonicalStock {
        sku: sku.into(),
        warehouse: warehouse.into(),
        quantity: Decimal::from(quantity),
    }
}

#[tokio::test]
async fn catalogue_prices_and_stock_converge_both_ways() {
    let rig = rig().await;
    rig.host
        .put_product(product("P-1", "TEA-1", "Чай зелений", "120.50"));
    rig.host.put_product(product("P-2", "CUP-1", "Чашка", "89"));
    rig.host.put_offer(offer("V-1", "TEA-1", "120.50", "60"));
    rig.host.put_offer(offer("V-2", "CUP-1", "89", "40"));
    rig.host.put_stock(stock("main", "TEA-1", 14));
    rig.host.put_stock(stock("lviv", "TEA-1", 3));
    rig.host.put_stock(stock("main", "CUP-1", 25));
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(
        rig.mock.count("product_import"),
        1,
        "both products in one import"
    );
    assert_eq!(rig.mock.count("product_create"), 0);
    assert_eq!(rig.mock.count("offer_stock_update"), 2, "one per warehouse");
    let client = rig.engine.client().clone();
    let tea = remote_offer(&client, "TEA-1").await;
    let cup = remote_offer(&client, "CUP-1").await;
    let store = rig.engine.store();
    assert_eq!(
        remote_id(store, EntityKind::Offer, "V-1").await,
        tea.id.unwrap()
    );
    assert_eq!(tea.purchased_price, Some(dec("60")));
    assert_eq!(
        remote_stock(&client, &["TEA-1", "CUP-1"]).await,
        BTreeMap::from([
            ((1, "TEA-1".to_string()), dec("14")),
            ((2, "TEA-1".to_string()), dec("3")),
            ((1, "CUP-1".to_string()), dec("25")),
        ])
    );

    // A local price change goes out in one bulk `PUT /offers`.
    rig.host.put_offer(offer("V-1", "TEA-1", "135.50", "60"));
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(rig.mock.count("offer_update_batch"), 1);
    assert_eq!(writes(&rig.mock), 1, "{:?}", rig.mock.requests());
    assert_eq!(
        remote_offer(&client, "TEA-1").await.price,
        Some(dec("135.5"))
    );

    // A price and a stock level changed in KeyCRM come back on the next full pass.
    let batch = types::OfferUpdateBatch {
        offers: vec![types::OfferUpdateRow {
            id: cup.id,
            price: Some(dec("95")),
            ..types::OfferUpdateRow::default()
        }],
    };
    client
        .offer_update_batch()
        .body(batch)
        .send()
        .await
        .unwrap();
    rig.mock.crm().set_stock(tea.id.unwrap(), 1, 9);
    run_to_full_pass(&rig.engine).await;
    assert_eq!(rig.host.offer("V-2").unwrap().price, Some(dec("95")));
    assert_eq!(rig.host.stock("main/TEA-1").unwrap().quantity, dec("9"));
    assert_eq!(rig.host.stock("lviv/TEA-1").unwrap().quantity, dec("3"));
    settle(&rig.engine, 4).await;

    // Field by field, both sides agree.
    for (local_id, remote) in [("P-1", "TEA-1"), ("P-2", "CUP-1")] {
        let id = remote_id(store, EntityKind::Product, local_id).await;
        let p = client
            .product_get()
            .product_id(id)
            .send()
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.sku.as_deref(), Some(remote));
        assert_eq!(
            canonical::product_fields_from_local(&rig.host.product(local_id).unwrap()),
            canonical::product_fields_from_remote(&p),
            "product {local_id}"
        );
    }
    for (local_id, sku) in [("V-1", "TEA-1"), ("V-2", "CUP-1")] {
        assert_eq!(
            canonical::offer_fields_from_local(&rig.host.offer(local_id).unwrap()),
            canonical::offer_fields_from_remote(&remote_offer(&client, sku).await),
            "offer {local_id}"
        );
    }
    let remote_levels = remote_stock(&client, &["TEA-1", "CUP-1"]).await;
    let warehouse = |id: i64| if id == 1 { "main" } else { "lviv" };
    for ((wh, sku), quantity) in &remote_levels {
        let key = format!("{}/{sku}", warehouse(*wh));
        assert_eq!(
            rig.host.stock(&key).unwrap().quantity,
            *quantity,
            "stock {key}"
        );
    }
    assert_eq!(remote_levels.len(), 3);
    // The host has exactly the catalogue KeyCRM has (each product's default offer included).
    let products = store
        .list_mappings(EntityKind::Product, None)
        .await
        .unwrap();
    assert_eq!(products.len(), 2, "{products:?}");
    let offers = store.list_mappings(EntityKind::Offer, None).await.unwrap();
    assert_eq!(offers.len(), 2, "{offers:?}");

    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(writes(&rig.mock), 0, "{:?}", rig.mock.requests());
    let resync = rig.engine.full_resync().await.unwrap();
    assert!(resync.full_pass);
    assert_eq!(resync.failed, 0, "{resync:?}");
    assert_eq!(
        writes(&rig.mock),
        0,
        "a full resync of unchanged data writes nothing: {:?}",
        rig.mock.requests()
    );
}

#[tokio::test]
async fn a_stock_webhook_brings_a_crm_stock_change_to_the_host() {
    let mut one_warehouse = config();
    one_warehouse.warehouse_ids = BTreeMap::from([("main".to_string(), 1)]);
    let rig = rig_with(
        KeyCrmMock::builder().webhook_attempts(1),
        one_warehouse,
        |b| b,
    )
    .await;
    // Nobody listens there: the deliveries are only recorded, and the test hands them on.
    rig.mock
        .register_stock_webhook("http://127.0.0.1:9/keycrm/stock");
    rig.host
        .put_product(product("P-1", "TEA-1", "Чай зелений", "120.50"));
    rig.host.put_offer(offer("V-1", "TEA-1", "120.50", "60"));
    rig.host.put_stock(stock("main", "TEA-1", 14));
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    let client = rig.engine.client().clone();
    let tea = remote_offer(&client, "TEA-1").await.id.unwrap();
    rig.mock.crm().set_stock(tea, 1, 9);
    let deliveries = rig.mock.wait_for_webhooks().await;
    let in_stock = |d: &&keycrm_api::mock::WebhookDelivery| {
        d.payload[0]["in_stock"]
            .to_string()
            .trim_matches('"')
            .parse::<f64>()
            .ok()
    };
    let echo = deliveries
        .iter()
        .find(|d| d.event.is_none() && in_stock(d) == Some(14.0))
        .expect("the stock webhook of the engine's own push");
    let change = deliveries
        .iter()
        .find(|d| d.event.is_none() && in_stock(d) == Some(9.0))
        .expect("the stock webhook of the change in the CRM");
    assert!(rig.engine.ingest_webhook(&echo.payload).await.unwrap());
    assert_eq!(
        rig.host.stock("main/TEA-1").unwrap().quantity,
        dec("14"),
        "an echo changes nothing"
    );
    assert!(rig.engine.ingest_webhook(&change.payload).await.unwrap());
    assert!(
        !rig.engine.ingest_webhook(&change.payload).await.unwrap(),
        "a repeated delivery is a duplicate"
    );
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert!(
        !report.full_pass,
        "the webhook, not a full pass, brought it"
    );
    assert_eq!(rig.host.stock("main/TEA-1").unwrap().quantity, dec("9"));
    assert_eq!(
        remote_stock(&client, &["TEA-1"]).await[&(1, "TEA-1".to_string())],
        dec("9")
    );
    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "the applied level is not pushed back: {:?}",
        rig.mock.requests()
    );
}

// -------------------------------------------------------------------------------------------
// Request economy

#[tokio::test]
async fn ten_thousand_stock_rows_go_out_in_one_request_per_warehouse() {
    // SQLite (in memory) rather than `MemoryStore`: the latter finds an outbox item by
    // scanning the whole outbox, which 20,000 items make slow in a debug build.
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let host = MemoryHost::new(mappings());
    let engine = SyncEngine::builder()
        .client(
            mock.client_builder()
                .requests_per_minute(0)
                .build()
                .unwrap(),
        )
        .store(SqliteStore::open_in_memory().unwrap())
        .host(host.clone())
        .config(config())
        .build()
        .unwrap();
    let rig = SqliteRig { mock, host, engine };
    // The first run is a full pass; on the empty account it is cheap.
    rig.engine.run_once().await.unwrap();
    rig.mock.seed(SeedConfig {
        products: 7_200,
        buyers: 0,
        companies: 0,
        orders: 0,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    let client = rig.engine.client().clone();
    let offers: Vec<types::Offer> = client.offer_list().items().try_collect().await.unwrap();
    assert!(offers.len() >= 10_000, "{} offers seeded", offers.len());
    let picked: Vec<(i64, String)> = offers
        .iter()
        .take(10_000)
        .map(|o| (o.id.unwrap(), o.sku.clone().unwrap()))
        .collect();
    let main_level = |i: usize| 100 + (i % 50) as i64;
    let lviv_level = |i: usize| 1 + (i % 7) as i64;
    for (i, (_, sku)) in picked.iter().enumerate() {
        rig.host.put_stock(stock("main", sku, main_level(i)));
        rig.host.put_stock(stock("lviv", sku, lviv_level(i)));
    }
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert!(!report.full_pass);
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.pushed, 20_000, "{report:?}");
    assert_eq!(rig.mock.count("offer_stock_update"), 2);
    assert_eq!(writes(&rig.mock), 2, "only the two stock updates");
    for (i, (id, _)) in picked.iter().enumerate() {
        let (total, _) = rig.mock.crm().stock(*id).unwrap();
        assert_eq!(
            total,
            Decimal::from(main_level(i) + lviv_level(i)),
            "offer {id}"
        );
    }
    let sample: Vec<&str> = picked[..50].iter().map(|(_, s)| s.as_str()).collect();
    let levels = remote_stock(&client, &sample).await;
    for (i, sku) in sample.iter().enumerate() {
        assert_eq!(levels[&(1, sku.to_string())], Decimal::from(main_level(i)));
        assert_eq!(levels[&(2, sku.to_string())], Decimal::from(lviv_level(i)));
    }

    rig.mock.clear_log();
    let again = rig.engine.run_once().await.unwrap();
    assert_eq!(writes(&rig.mock), 0, "unchanged stock costs nothing");
    assert_eq!(again.pushed, 0);
}

#[tokio::test]
async fn an_initial_export_of_500_orders_uses_ten_imports() {
    let rig = rig().await;
    for n in 1..=500 {
        rig.host.put_order(order(n));
    }
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.pushed, 500, "{report:?}");
    assert!(rig.mock.count("order_import") <= 10);
    assert_eq!(rig.mock.count("order_import"), 10, "50 orders per import");
    assert_eq!(rig.mock.count("order_create"), 0);
    assert_eq!(
        writes(&rig.mock),
        10,
        "the imports are the only writes: {:?}",
        rig.mock.requests()
    );
    // Reads: 10 look-ups by source_uuid before importing, 10 read-back pages after, and the
    // first pull of the (empty) order list.
    let reads = rig.mock.count("order_list");
    assert!(reads <= 21, "{reads} order list pages");
    let uuids = orders_by_uuid(&rig.mock);
    assert_eq!(uuids.len(), 500);
    for n in 1..=500 {
        assert_eq!(uuids[&format!("WMS-{n}")].len(), 1, "WMS-{n}");
    }
    let synced = rig
        .engine
        .store()
        .list_mappings(EntityKind::Order, Some(SyncState::Synced))
        .await
        .unwrap();
    assert_eq!(synced.len(), 500);

    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(writes(&rig.mock), 0, "{:?}", rig.mock.requests());
}

// -------------------------------------------------------------------------------------------
// Conflicts

/// An order both sides change between two runs: the host writes "local" into its comment,
/// a manager "remote" in KeyCRM. `local_time` is the host's `updated_at` for the edit.
async fn comment_conflict(policy: Option<Policy>, local_time: Option<Timestamp>) -> (Rig, i64) {
    let rig = rig_with(KeyCrmMock::builder(), config(), |b| match policy {
        Some(p) => b.policy(EntityKind::Order, p),
        None => b,
    })
    .await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let id = remote_id(rig.engine.store(), EntityKind::Order, "WMS-1").await;
    assert!(rig.host.edit_order("WMS-1", |o| {
        o.comment = Some("local".into());
        o.updated_at = local_time;
    }));
    rig.mock
        .crm()
        .edit_order(id, serde_json::json!({"manager_comment": "remote"}));
    settle(&rig.engine, 5).await;
    (rig, id)
}

/// Asserts both sides hold `value` and the conflict log holds one entry for the comment.
async fn assert_comment_resolved(rig: &Rig, id: i64, value: &str, winner: &str, reason: &str) {
    assert_eq!(
        rig.host.order("WMS-1").unwrap().comment.as_deref(),
        Some(value)
    );
    assert_eq!(
        remote_order(&rig.mock, id)["manager_comment"],
        serde_json::json!(value)
    );
    let conflicts = rig
        .engine
        .store()
        .list_conflicts(Some(EntityKind::Order), 10)
        .await
        .unwrap();
    let logged: Vec<_> = conflicts
        .iter()
        .filter(|c| c.field == "manager_comment")
        .collect();
    assert_eq!(logged.len(), 1, "{conflicts:?}");
    let c = logged[0];
    assert_eq!(c.local_id, "WMS-1");
    assert_eq!(c.remote_id, Some(id));
    assert_eq!(c.base, None);
    assert_eq!(c.local, Some(serde_json::json!("local")));
    assert_eq!(c.remote, Some(serde_json::json!("remote")));
    assert_eq!(c.winner, winner);
    assert_eq!(c.reason, reason);
    assert_eq!(
        conflicts.len(),
        1,
        "no other field conflicted: {conflicts:?}"
    );
}

#[tokio::test]
async fn conflict_remote_wins() {
    let (rig, id) = comment_conflict(Some(Policy::new(Resolution::RemoteWins)), None).await;
    assert_comment_resolved(&rig, id, "remote", "remote", "both changed; RemoteWins").await;
}

#[tokio::test]
async fn conflict_local_wins() {
    let (rig, id) = comment_conflict(Some(Policy::new(Resolution::LocalWins)), None).await;
    assert_comment_resolved(&rig, id, "local", "local", "both changed; LocalWins").await;
}

#[tokio::test]
async fn conflict_newest_wins_by_utc_time() {
    // Whole seconds: the store keeps microseconds, KeyCRM seconds.
    let later =
        Timestamp::from(DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap());
    let (rig, id) = comment_conflict(Some(Policy::new(Resolution::NewestWins)), Some(later)).await;
    assert_comment_resolved(&rig, id, "local", "local", "both changed; NewestWins").await;
    let c = &rig
        .engine
        .store()
        .list_conflicts(Some(EntityKind::Order), 1)
        .await
        .unwrap()[0];
    assert_eq!(c.local_updated_at, Some(later.into_datetime()));
    assert!(c.remote_updated_at.unwrap() < later.into_datetime());

    let earlier =
        Timestamp::from(DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).unwrap());
    let (rig, id) = comment_conflict(None, Some(earlier)).await;
    assert_comment_resolved(&rig, id, "remote", "remote", "both changed; NewestWins").await;
}

#[tokio::test]
async fn conflict_goes_to_the_field_owner() {
    let policy = Policy::new(Resolution::RemoteWins).with_owner("manager_comment", Side::Local);
    let (rig, id) = comment_conflict(Some(policy), None).await;
    assert_comment_resolved(&rig, id, "local", "local", "field owned by local").await;
}

#[tokio::test]
async fn an_order_status_never_moves_backwards_by_default() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let id = remote_id(rig.engine.store(), EntityKind::Order, "WMS-1").await;
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("approved".into()));
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        remote_order(&rig.mock, id)["status_id"],
        serde_json::json!(2)
    );

    // The manager ships the order while the host moves it back to "new", later (by the
    // clocks): newest-wins alone would take the host's status.
    rig.mock.crm().set_order_status(id, 4);
    let later = Timestamp::from(Utc::now() + chrono::Duration::hours(1));
    rig.host.edit_order("WMS-1", |o| {
        o.status = Some("new".into());
        o.updated_at = Some(later);
    });
    settle(&rig.engine, 5).await;
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert_eq!(
        remote_order(&rig.mock, id)["status_id"],
        serde_json::json!(4)
    );
    let conflicts = rig
        .engine
        .store()
        .list_conflicts(Some(EntityKind::Order), 10)
        .await
        .unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(c.field, "status_id");
    assert_eq!(c.base, Some(serde_json::json!(2)));
    assert_eq!(c.local, Some(serde_json::json!(1)));
    assert_eq!(c.remote, Some(serde_json::json!(4)));
    assert_eq!(c.winner, "remote");
    assert_eq!(c.reason, "status may not move backwards (Local refused)");
}

// -------------------------------------------------------------------------------------------
// Interruption and faults

/// A temporary SQLite file, removed (with its WAL files) when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        Self(std::env::temp_dir().join(format!(
            "keycrm-sync-{name}-{}-{nanos}.sqlite",
            std::process::id()
        )))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test]
async fn an_interrupted_engine_resumes_from_its_sqlite_file() {
    let db = TempDb::new("interrupted");
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .lost_response_delay(Duration::from_millis(600))
        .start()
        .await;
    let host = MemoryHost::new(mappings());
    let skew = Skew::default();
    // A short timeout while runs are being cut, so that a lost response costs little; a
    // generous one for the final convergence, so that a loaded machine cannot fail it.
    let engine = |timeout: Duration| {
        SyncEngine::builder()
            .client(
                mock.client_builder()
                    .requests_per_minute(0)
                    .timeout(timeout)
                    .build()
                    .unwrap(),
            )
            .store(SqliteStore::open(&db.0).unwrap())
            .host(host.clone())
            .config(config())
            .outbox_clock(skew.clock())
            .build()
            .unwrap()
    };
    for n in 1..=120 {
        host.put_order(numbered_order(n));
    }
    mock.faults().set_latency(Duration::from_millis(3));
    mock.faults().lose_next_creates(2);
    // Each engine is dropped after `d`, wherever it is: in a request, between the import and
    // the mapping, halfway through the updates. The host keeps changing in between.
    let mut cuts = 0;
    for (round, d) in [40u64, 70, 95, 120, 150, 180, 220, 280, 350]
        .into_iter()
        .enumerate()
    {
        let e = engine(Duration::from_millis(250));
        if tokio::time::timeout(Duration::from_millis(d), e.run_once())
            .await
            .is_err()
        {
            cuts += 1;
        }
        drop(e);
        let n = (round * 13 % 120 + 1) as u32;
        assert!(host.edit_order(&format!("ord-{n}"), |o| {
            o.comment = Some(format!("правка {round}"));
            o.status = Some("approved".into());
        }));
        host.put_order(numbered_order(121 + round as u32));
        if round % 3 == 0 {
            mock.faults().lose_next_creates(1);
        }
        skew.pass_backoff();
    }
    assert!(cuts >= 3, "only {cuts} runs were cut short");
    mock.faults().clear();
    let e = engine(Duration::from_secs(10));
    let mut quiet = false;
    for _ in 0..8 {
        skew.pass_backoff();
        let report = e.run_once().await.unwrap();
        let status = e.status().await.unwrap();
        if report.failed == 0 && status.outbox_depth == 0 && report.pushed == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "{:?}", e.status().await.unwrap());
    let uuids = orders_by_uuid(&mock);
    assert_eq!(host.orders().len(), 120 + 9);
    for order in host.orders() {
        let number = order.number.clone().unwrap();
        assert_eq!(
            uuids.get(&number).map(Vec::len),
            Some(1),
            "{number} exactly once in KeyCRM"
        );
    }
    assert_eq!(
        uuids.len(),
        host.orders().len(),
        "no order KeyCRM alone has"
    );
    assert_orders_agree(&mock, &host, e.store()).await;
    for round in 0..9usize {
        let n = round * 13 % 120 + 1;
        let id = remote_id(e.store(), EntityKind::Order, &format!("ord-{n}")).await;
        let remote = remote_order(&mock, id);
        assert_eq!(remote["status_id"], serde_json::json!(2), "ord-{n}");
        assert_eq!(
            remote["manager_comment"],
            serde_json::json!(format!("правка {round}")),
            "ord-{n}"
        );
    }
    let mappings = e
        .store()
        .list_mappings(EntityKind::Order, None)
        .await
        .unwrap();
    assert_eq!(mappings.len(), 129);
    assert!(
        mappings.iter().all(|m| m.state == SyncState::Synced),
        "{:?}",
        mappings
            .iter()
            .filter(|m| m.state != SyncState::Synced)
            .collect::<Vec<_>>()
    );
    let status = e.status().await.unwrap();
    assert_eq!((status.outbox_depth, status.dead_letters), (0, 0));
}

/// Whether the host and KeyCRM hold the same orders with the same fields (no panics: for
/// polling).
async fn orders_agree<S: Store>(mock: &KeyCrmMock, host: &MemoryHost, store: &S) -> bool {
    let m = mappings();
    let host_orders = host.orders();
    if host_orders.len() != mock.crm().order_ids().len() {
        return false;
    }
    for order in &host_orders {
        let mapping = store
            .get_mapping(EntityKind::Order, &order.local_id)
            .await
            .unwrap();
        let Some(id) = mapping.and_then(|m| m.remote_id) else {
            return false;
        };
        if canonical::order_fields_from_local(order, &m).ok() != Some(remote_order(mock, id)) {
            return false;
        }
    }
    true
}

/// Orders change on both sides while KeyCRM fails a `share` of requests with `status` (a
/// seeded choice) and, when `lose_creates`, answers some creates too late: the engine goes
/// on retrying (bounded) until both sides agree, creating nothing twice.
async fn converges_under_faults(share: f64, status: u16, seed: u64, lose_creates: bool) {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .lost_response_delay(Duration::from_millis(600))
        .start()
        .await;
    let host = MemoryHost::new(mappings());
    let skew = Skew::default();
    let mut cfg = config();
    cfg.retry_attempts = 100;
    let engine = SyncEngine::builder()
        .client(impatient_client(&mock))
        .store(MemoryStore::new())
        .host(host.clone())
        .config(cfg)
        .outbox_clock(skew.clock())
        .build()
        .unwrap();
    for n in 1..=100 {
        host.put_order(order(n));
    }
    mock.faults().fail_share(share, status, seed);
    if lose_creates {
        // A fifth of the creates that succeed have their answer lost as well.
        mock.faults().lose_create_share(0.2, seed + 1);
    }
    let mut runs = 0;
    let mut converged = false;
    let mut failed_runs = 0;
    let mut shipped = Vec::new();
    while runs < 30 {
        // A run may stop halfway (a read failed after the client's retries): the next one
        // goes on from the durable state.
        if engine.run_once().await.is_err() {
            failed_runs += 1;
        }
        runs += 1;
        skew.pass_backoff();
        if runs == 3 {
            // Both sides change while the faults go on.
            for n in 1..=20 {
                host.edit_order(&format!("WMS-{n}"), |o| {
                    o.status = Some("approved".into());
                    o.comment = Some(format!("коментар {n}"));
                });
            }
            for n in 101..=110 {
                host.put_order(order(n));
            }
            let store = engine.store();
            for n in 41..=50 {
                if let Some(id) = store
                    .get_mapping(EntityKind::Order, &format!("WMS-{n}"))
                    .await
                    .unwrap()
                    .and_then(|m| m.remote_id)
                {
                    mock.crm().set_order_status(id, 4);
                    shipped.push(format!("WMS-{n}"));
                }
            }
        }
        if runs > 3
            && engine.status().await.unwrap().outbox_depth == 0
            && orders_agree(&mock, &host, engine.store()).await
        {
            converged = true;
            break;
        }
    }
    let served = mock.faults().served();
    mock.faults().clear();
    assert!(
        converged,
        "not converged after {runs} runs: {:?}",
        engine.status().await.unwrap()
    );
    assert!(served > 5, "only {served} faults served");
    let uuids = orders_by_uuid(&mock);
    assert_eq!(uuids.len(), 110);
    for n in 1..=110 {
        assert_eq!(uuids[&format!("WMS-{n}")].len(), 1, "WMS-{n} once");
    }
    assert_orders_agree(&mock, &host, engine.store()).await;
    for n in 1..=20 {
        let o = host.order(&format!("WMS-{n}")).unwrap();
        assert_eq!(o.status.as_deref(), Some("approved"));
        assert_eq!(o.comment, Some(format!("коментар {n}")));
    }
    assert!(!shipped.is_empty());
    for local_id in &shipped {
        let o = host.order(local_id).unwrap();
        assert_eq!(o.status.as_deref(), Some("shipped"), "{local_id}");
    }
    let status = engine.status().await.unwrap();
    assert_eq!(status.dead_letters, 0);
    assert!(
        engine
            .store()
            .list_mappings(EntityKind::Order, None)
            .await
            .unwrap()
            .iter()
            .all(|m| m.state == SyncState::Synced)
    );
    eprintln!("converged after {runs} runs ({failed_runs} stopped early), {served} faults");
    mock.clear_log();
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(writes(&mock), 0, "converged: {:?}", mock.requests());
}

#[tokio::test]
async fn converges_when_a_fifth_of_requests_get_503() {
    converges_under_faults(0.2, 503, 7, false).await;
}

#[tokio::test]
async fn converges_when_a_fifth_of_requests_get_429() {
    converges_under_faults(0.2, 429, 11, false).await;
}

#[tokio::test]
async fn converges_when_create_responses_are_lost_and_a_fifth_fail() {
    converges_under_faults(0.2, 502, 5, true).await;
}

/// A host that does not implement `find_local`: it cannot tell the engine which local record a
/// KeyCRM record stands for.
#[derive(Clone)]
struct PlainHost(MemoryHost);

impl keycrm_sync::host::Host for PlainHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<keycrm_sync::host::LocalChanges, keycrm_sync::host::HostError> {
        self.0.changes_since(kind, cursor).await
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<keycrm_sync::model::Snapshot>, keycrm_sync::host::HostError> {
        self.0.load(kind, local_id).await
    }

    async fn apply(
        &self,
        kind: EntityKind,
        change: keycrm_sync::host::RemoteChange,
    ) -> Result<keycrm_sync::host::Applied, keycrm_sync::host::HostError> {
        self.0.apply(kind, change).await
    }
}

#[tokio::test]
async fn a_lost_create_is_found_again_without_the_hosts_help() {
    use keycrm_sync::host::Host as _;
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let config = config();
    let memory = MemoryHost::new(Mappings::from_config(&config));
    let skew = Skew::default();
    let engine = SyncEngine::builder()
        .client(impatient_client(&mock))
        .store(MemoryStore::new())
        .host(PlainHost(memory.clone()))
        .config(config)
        .outbox_clock(skew.clock())
        .build()
        .unwrap();
    for n in 1..=3 {
        // Host ids differ from the numbers KeyCRM knows the orders by.
        memory.put_order(CanonicalOrder {
            local_id: format!("local-{n}"),
            ..order(n)
        });
    }
    assert_eq!(
        memory
            .find_local(EntityKind::Order, Default::default())
            .await
            .unwrap(),
        None
    );
    mock.faults().lose_next_creates(1);
    engine.run_once().await.unwrap();
    for _ in 0..3 {
        skew.0.fetch_add(3600, Ordering::Relaxed);
        engine.run_once().await.unwrap();
    }
    let numbers: Vec<String> = mock
        .crm()
        .order_ids()
        .into_iter()
        .filter_map(|id| mock.crm().order(id))
        .filter_map(|o| o["source_uuid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(numbers.len(), 3, "created once each: {numbers:?}");
    assert_eq!(memory.orders().len(), 3, "no duplicate local records");
    let mappings = engine
        .store()
        .list_mappings(EntityKind::Order, None)
        .await
        .unwrap();
    assert_eq!(mappings.len(), 3);
    assert!(
        mappings
            .iter()
            .all(|m| m.state == SyncState::Synced && m.remote_id.is_some()),
        "{mappings:?}"
    );
}

#[tokio::test]
async fn dry_run_plans_but_writes_nothing_and_keeps_the_outbox() {
    let rig = rig_with(
        KeyCrmMock::builder(),
        SyncConfig {
            dry_run: true,
            ..config()
        },
        |b| b,
    )
    .await;
    rig.host.put_order(order(1));
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Олена".into(),
        phones: vec!["+380501112233".into()],
        ..CanonicalBuyer::default()
    });
    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(writes(&rig.mock), 0, "{:?}", rig.mock.requests());
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.outbox_depth, 2, "still pending for a real run");
    let audit = rig.engine.store().list_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "dry-run" && a.detail.contains("create order WMS-1")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "dry-run" && a.detail == "create buyer"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn the_mass_zeroing_guard_refuses_and_reports() {
    let rig = rig().await;
    rig.mock.seed(SeedConfig {
        products: 20,
        orders: 0,
        buyers: 0,
        companies: 0,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    let skus: Vec<String> = rig
        .engine
        .client()
        .offer_list()
        .collect_all()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| o.sku)
        .take(12)
        .collect();
    rig.engine.run_once().await.unwrap();
    for sku in &skus {
        rig.host.put_stock(CanonicalStock {
            sku: sku.clone(),
            warehouse: "main".into(),
            quantity: Decimal::ZERO,
        });
    }
    let mut events = Box::pin(rig.engine.subscribe());
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("offer_stock_update"), 0, "nothing written");
    assert_eq!(report.failed, 12, "{report:?}");
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.per_kind[&EntityKind::Stock].error, 12);
    use futures::StreamExt;
    let event = events.next().await.unwrap();
    match event {
        keycrm_sync::SyncEvent::Failed {
            kind, error, dead, ..
        } => {
            assert_eq!(kind, EntityKind::Stock);
            assert!(error.contains("would zero 12 of 12 SKUs"), "{error}");
            assert!(!dead);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_record_that_keeps_failing_is_dead_lettered_after_the_configured_attempts() {
    let skew = Skew::default();
    let rig = rig_with(
        KeyCrmMock::builder(),
        SyncConfig {
            retry_attempts: 3,
            ..config()
        },
        |b| b.outbox_clock(skew.clock()),
    )
    .await;
    // A status the configuration does not map: the order can never be sent.
    rig.host.put_order(CanonicalOrder {
        status: Some("lost-in-space".into()),
        ..order(1)
    });
    for _ in 0..4 {
        rig.engine.run_once().await.unwrap();
        skew.0.fetch_add(7200, Ordering::Relaxed);
    }
    let dead = rig
        .engine
        .store()
        .dead_letters(Some(EntityKind::Order))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("status_ids"),
        "{:?}",
        dead[0].last_error
    );
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.dead_letters, 1);
    assert_eq!(writes(&rig.mock), 0);
}

#[tokio::test]
async fn subscribers_see_pushes_and_applied_changes_and_status_counts_them() {
    use futures::{FutureExt, StreamExt};
    let rig = rig().await;
    let mut events = Box::pin(rig.engine.subscribe());
    let mut drain = move || {
        let mut seen = Vec::new();
        while let Some(Some(event)) = events.next().now_or_never() {
            seen.push(event);
        }
        seen
    };
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let first = drain();
    let remote_id = rig.mock.crm().order_ids()[0];
    assert!(
        first.contains(&keycrm_sync::SyncEvent::Pushed {
            kind: EntityKind::Order,
            local_id: "WMS-1".into(),
            remote_id: Some(remote_id)
        }),
        "{first:?}"
    );
    rig.mock.crm().set_order_status(remote_id, 2);
    rig.engine.run_once().await.unwrap();
    let second = drain();
    let applied = keycrm_sync::SyncEvent::Applied {
        kind: EntityKind::Order,
        local_id: "WMS-1".into(),
        remote_id: Some(remote_id),
    };
    assert!(second.contains(&applied), "{second:?}");
    let json = serde_json::to_value(&applied).unwrap();
    assert_eq!(json["type"], "applied");
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.per_kind[&EntityKind::Order].synced, 1);
    assert_eq!(status.outbox_depth, 0);
    assert_eq!(status.runs, 2);
    assert!(
        status.keycrm.requests > 0 && status.keycrm.errors == 0,
        "{:?}",
        status.keycrm
    );
    assert_eq!(
        status.last_run.unwrap().applied,
        2,
        "the order and the buyer KeyCRM made for it"
    );
}

#[tokio::test]
async fn run_stops_when_its_token_is_cancelled() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    let token = keycrm_sync::CancellationToken::new();
    let engine = rig.engine.clone();
    let handle = tokio::spawn({
        let token = token.clone();
        async move { engine.run(token).await }
    });
    // The first run happens at once; wait for its push, then stop the loop.
    let mut events = Box::pin(rig.engine.subscribe());
    use futures::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a run happened");
    assert!(first.is_some());
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the loop stopped")
        .unwrap();
    assert_eq!(rig.mock.crm().order_ids().len(), 1);
}

#[tokio::test]
async fn webhooks_are_deduplicated_and_applied_in_real_time() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let remote_id = rig.mock.crm().order_ids()[0];
    rig.mock.crm().set_order_status(remote_id, 4);
    let context = rig.mock.crm().order(remote_id).unwrap();
    let body = serde_json::json!({"event": "order.change_order_status", "context": context});
    assert!(
        rig.engine.ingest_webhook(&body).await.unwrap(),
        "stored and applied"
    );
    // The inbox worker applies it apart from the intake; here the test applies it now.
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert!(
        !rig.engine.ingest_webhook(&body).await.unwrap(),
        "a repeated delivery is a duplicate"
    );
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.inbox_backlog, 0);
}
