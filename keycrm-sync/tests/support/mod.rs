//! Setup shared by the test binaries of `keycrm-sync`: the configuration, a rig of simulator,
//! host and engine, clients, clocks, canonical records and what KeyCRM holds.
//!
//! Every binary includes this module (`mod support;`, or with `#[path]` from a folder) and
//! uses a part of it; `dead_code` is allowed because what one binary leaves unused another
//! uses, and an unused helper would otherwise warn in every binary that does not need it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use keycrm_api::clock::{Clock, Sleep, VirtualClock};
use keycrm_api::mock::{KeyCrmMock, KeyCrmMockBuilder, Quota, SeedConfig};
use keycrm_api::{Client, Decimal, Paginate, types};
use keycrm_sync::canonical::{
    self, CanonicalContact, CanonicalLine, CanonicalOffer, CanonicalOrder, CanonicalProduct,
    CanonicalStock, Mappings,
};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::engine::PassOutcome;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::{EntityKind, Fields};
use keycrm_sync::store::{MemoryStore, SqliteStore, Store};
use keycrm_sync::{SyncEngine, SyncEngineBuilder};
use tracing::field::{Field, Visit};
use wiremock::MockServer;

/// KeyCRM's order status ids by the host's status names.
pub const STATUS_IDS: [(&str, i64); 6] = [
    ("new", 1),
    ("approved", 2),
    ("packing", 3),
    ("shipped", 4),
    ("completed", 5),
    ("canceled", 6),
];

/// KeyCRM's payment method ids by the host's names.
pub const PAYMENT_METHOD_IDS: [(&str, i64); 5] = [
    ("cod", 1),
    ("invoice", 2),
    ("card", 3),
    ("apple_pay", 4),
    ("cash", 5),
];

/// KeyCRM's warehouse ids by the host's names.
pub const WAREHOUSE_IDS: [(&str, i64); 2] = [("main", 1), ("lviv", 2)];

/// The ids of `names` as `table` gives them.
fn ids(table: &[(&str, i64)], names: &[&str]) -> BTreeMap<String, i64> {
    names
        .iter()
        .map(|name| {
            let (_, id) = table
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no id for `{name}`"));
            (name.to_string(), *id)
        })
        .collect()
}

/// The names of `table`.
fn names<const N: usize>(table: &[(&'static str, i64); N]) -> [&'static str; N] {
    table.map(|(name, _)| name)
}

/// The configuration of most tests: API key `test`, source 1, and every status, payment method
/// and warehouse of the tables above.
pub fn config() -> SyncConfig {
    config_with(
        &names(&STATUS_IDS),
        &names(&PAYMENT_METHOD_IDS),
        &names(&WAREHOUSE_IDS),
    )
}

/// The same with only these statuses, payment methods and warehouses mapped (ids as in the
/// tables above).
pub fn config_with(statuses: &[&str], payment_methods: &[&str], warehouses: &[&str]) -> SyncConfig {
    SyncConfig {
        api_key: Secret::new("test"),
        source_id: Some(1),
        status_ids: ids(&STATUS_IDS, statuses),
        payment_method_ids: ids(&PAYMENT_METHOD_IDS, payment_methods),
        warehouse_ids: ids(&WAREHOUSE_IDS, warehouses),
        ..SyncConfig::default()
    }
}

/// A simulator, an in-memory host and an engine on an in-memory store.
pub struct Rig {
    pub mock: KeyCrmMock,
    pub host: MemoryHost,
    pub engine: SyncEngine<MemoryStore, MemoryHost>,
}

/// The same on SQLite (in memory).
pub struct SqliteRig {
    pub mock: KeyCrmMock,
    pub host: MemoryHost,
    pub engine: SyncEngine<SqliteStore, MemoryHost>,
}

pub type Builder = SyncEngineBuilder<MemoryStore, MemoryHost>;

/// A rig with [`config`] on a default simulator.
pub async fn rig() -> Rig {
    rig_with(KeyCrmMock::builder(), config(), |b| b).await
}

/// A rig on a simulator from `mock` (the quota made unlimited) with `config`, and the engine
/// builder adjusted by `adjust` (policies, clock).
pub async fn rig_with(
    mock: KeyCrmMockBuilder,
    config: SyncConfig,
    adjust: impl FnOnce(Builder) -> Builder,
) -> Rig {
    let mock = mock.quota(Quota::unlimited()).start().await;
    let host = MemoryHost::new(Mappings::from_config(&config));
    let builder = SyncEngine::builder()
        .client(unpaced_client(&mock))
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config);
    let engine = adjust(builder).build().unwrap();
    Rig { mock, host, engine }
}

/// A simulator with an unlimited quota.
pub async fn simulator() -> KeyCrmMock {
    KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await
}

/// A simulator with an unlimited quota that answers a lost create after `delay`.
pub async fn lossy_simulator(delay: Duration) -> KeyCrmMock {
    KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .lost_response_delay(delay)
        .start()
        .await
}

/// What the simulator seeds: these products, buyers and orders, nothing else.
pub fn seed(products: usize, buyers: usize, orders: usize) -> SeedConfig {
    SeedConfig {
        products,
        buyers,
        orders,
        companies: 0,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    }
}

/// A client of the simulator that does not pace its requests.
pub fn unpaced_client(mock: &KeyCrmMock) -> Client {
    mock.client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap()
}

/// The same that gives up at the first failure (no retries).
pub fn no_retry_client(mock: &KeyCrmMock) -> Client {
    mock.client_builder()
        .requests_per_minute(0)
        .max_retries(0)
        .build()
        .unwrap()
}

/// A client of a wiremock server: no pacing, no retries.
pub fn wiremock_client(server: &MockServer) -> Client {
    Client::builder()
        .api_key("test")
        .base_url(server.uri())
        .requests_per_minute(0)
        .max_retries(0)
        .build()
        .unwrap()
}

/// A host for `config` and an engine over `client` and `store`.
pub fn engine_on<S: Store>(
    client: Client,
    store: S,
    config: SyncConfig,
) -> (MemoryHost, SyncEngine<S, MemoryHost>) {
    let host = MemoryHost::new(Mappings::from_config(&config));
    let engine = SyncEngine::builder()
        .client(client)
        .store(store)
        .host(host.clone())
        .config(config)
        .build()
        .unwrap();
    (host, engine)
}

/// A client for fault tests: no pacing, every wait (retry backoff, `Retry-After`) instant,
/// and a short timeout so that a lost response costs little.
pub fn impatient_client(mock: &KeyCrmMock) -> Client {
    mock.client_builder()
        .requests_per_minute(0)
        .clock(Arc::new(InstantWaits::default()))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// The waits of a [`VirtualClock`] (instant), the wall time of the system: these simulators
/// stamp by the system's time, and the engine takes its time from its client's clock.
#[derive(Debug, Default)]
struct InstantWaits(VirtualClock);

impl Clock for InstantWaits {
    fn now(&self) -> Duration {
        self.0.now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.0.sleep(duration)
    }
}

/// An outbox clock the test moves forward, so that failed items are retried at once
/// instead of after the engine's backoff (30 s and more).
#[derive(Clone, Default)]
pub struct Skew(pub Arc<AtomicI64>);

impl Skew {
    pub fn clock(&self) -> impl Fn() -> DateTime<Utc> + Send + Sync + 'static {
        let offset = self.0.clone();
        move || Utc::now() + chrono::Duration::seconds(offset.load(Ordering::Relaxed))
    }

    /// Past every backoff the engine uses (at most an hour).
    pub fn pass_backoff(&self) {
        self.0.fetch_add(2 * 3600, Ordering::Relaxed);
    }
}

/// A buyer contact: `{name} {n}`, phone `+38050` and `n` in seven digits, no email.
pub fn contact(name: &str, n: u32) -> CanonicalContact {
    CanonicalContact {
        name: Some(format!("{name} {n}")),
        phone: Some(format!("+38050{n:07}")),
        email: None,
    }
}

/// An order line.
pub fn line(sku: String, name: &str, quantity: i64, price: &str) -> CanonicalLine {
    CanonicalLine {
        sku,
        name: name.into(),
        quantity: Decimal::from(quantity),
        price: price.parse().unwrap(),
    }
}

/// Order `WMS-{n}`, status `new`, one line of two teas at 149.90 with SKU `SKU-{n % 7}`.
pub fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("WMS-{n}"),
        number: Some(format!("WMS-{n}")),
        status: Some("new".into()),
        buyer: contact("Покупець", n),
        lines: vec![line(format!("SKU-{}", n % 7), "Чай", 2, "149.90")],
        ..CanonicalOrder::default()
    }
}

pub fn writes(mock: &KeyCrmMock) -> usize {
    mock.requests().iter().filter(|r| r.method != "GET").count()
}

pub fn mappings() -> Mappings {
    Mappings::from_config(&config())
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// An order whose host id differs from its number (the `source_uuid`).
pub fn numbered_order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("ord-{n}"),
        ..order(n)
    }
}

/// KeyCRM's order as the simulator holds it (every relation), as canonical fields.
pub fn remote_order(mock: &KeyCrmMock, id: i64) -> Fields {
    let json = mock
        .crm()
        .order(id)
        .unwrap_or_else(|| panic!("KeyCRM has no order {id}"));
    let order: types::Order = serde_json::from_value(json).unwrap();
    canonical::order_fields_from_remote(&order)
}

/// KeyCRM's order ids by `source_uuid`.
pub fn orders_by_uuid(mock: &KeyCrmMock) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for id in mock.crm().order_ids() {
        let order = mock.crm().order(id).unwrap();
        if let Some(uuid) = order["source_uuid"].as_str() {
            out.entry(uuid.to_string()).or_default().push(id);
        }
    }
    out
}

pub async fn remote_id<S: Store>(store: &S, kind: EntityKind, local_id: &str) -> i64 {
    store
        .get_mapping(kind, local_id)
        .await
        .unwrap()
        .and_then(|m| m.remote_id)
        .unwrap_or_else(|| panic!("{kind} {local_id} is not mapped"))
}

/// Asserts that the host's record `local_id` of `kind` is linked to a KeyCRM record.
pub async fn assert_linked<S: Store>(store: &S, kind: EntityKind, local_id: &str) {
    let m = store.get_mapping(kind, local_id).await.unwrap().unwrap();
    assert!(m.remote_id.is_some(), "{local_id} is linked");
}

/// Every host order equals its KeyCRM order field by field, and the two sides hold the same
/// orders (one KeyCRM order per host order, none more).
pub async fn assert_orders_agree<S: Store>(mock: &KeyCrmMock, host: &MemoryHost, store: &S) {
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

pub async fn remote_buyer(client: &Client, id: i64) -> Fields {
    let buyer = client
        .buyer_get()
        .buyer_id(id)
        .send()
        .await
        .unwrap()
        .into_inner();
    canonical::buyer_fields_from_remote(&buyer)
}

pub async fn remote_offer(client: &Client, sku: &str) -> types::Offer {
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

/// The SKUs of the first `n` offers of KeyCRM's catalogue (fewer when it holds fewer).
pub async fn skus(client: &Client, n: usize) -> Vec<String> {
    client
        .offer_list()
        .collect_all()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| o.sku)
        .take(n)
        .collect()
}

/// Stock of the offers with these SKUs: (warehouse id, SKU) -> quantity.
pub async fn remote_stock(
    client: &Client,
    skus: &[impl AsRef<str>],
) -> BTreeMap<(i64, String), Decimal> {
    let skus: Vec<&str> = skus.iter().map(AsRef::as_ref).collect();
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
pub async fn settle<S: Store>(engine: &SyncEngine<S, MemoryHost>, max: usize) -> usize {
    for n in 1..=max {
        let report = engine.run_once().await.unwrap();
        assert_eq!(report.failed, 0, "run {n}: {report:?}");
        if report.collected == 0 && report.applied == 0 && report.pushed == 0 {
            return n;
        }
    }
    panic!("still busy after {max} runs");
}

/// The kinds read in full on a schedule (the catalogue's and the stock's).
pub const SCHEDULED_KINDS: [EntityKind; 3] =
    [EntityKind::Product, EntityKind::Offer, EntityKind::Stock];

/// The store's cursors of a kind's last complete and last incomplete full pass.
pub const FULL_PASS_CURSORS: [&str; 2] = ["full", "full_incomplete"];

/// Moves the stored times of `kinds`' last full passes `by` into the past, as if that much
/// time had passed since (a kind without one is due anyway).
pub async fn age_full_passes<S: Store>(store: &S, kinds: &[EntityKind], by: chrono::Duration) {
    for kind in kinds {
        for name in FULL_PASS_CURSORS {
            let Some(at) = store.get_cursor(*kind, name).await.unwrap() else {
                continue;
            };
            let at = DateTime::parse_from_rfc3339(&at).unwrap() - by;
            store
                .set_cursor(*kind, name, &at.to_rfc3339(), Utc::now())
                .await
                .unwrap();
        }
    }
}

/// Lets a day and an hour pass for the catalogue's and stock's schedules, then runs once:
/// the run reconciles the catalogue and stock in full, and completely.
pub async fn run_to_full_pass<S: Store>(engine: &SyncEngine<S, MemoryHost>) {
    age_full_passes(
        engine.store(),
        &SCHEDULED_KINDS,
        chrono::Duration::hours(25),
    )
    .await;
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.full_pass, "{report:?}");
    assert_eq!(
        report.full_passes,
        SCHEDULED_KINDS
            .map(|kind| (kind, PassOutcome::Complete))
            .into(),
        "{report:?}"
    );
}

pub fn product(local_id: &str, sku: &str, name: &str, price: &str) -> CanonicalProduct {
    CanonicalProduct {
        local_id: local_id.into(),
        sku: Some(sku.into()),
        name: name.into(),
        description: Some(format!("{name}: опис")),
        price: Some(dec(price)),
        ..CanonicalProduct::default()
    }
}

pub fn offer(local_id: &str, sku: &str, price: &str, purchased: &str) -> CanonicalOffer {
    CanonicalOffer {
        local_id: local_id.into(),
        sku: sku.into(),
        product_sku: Some(sku.into()),
        price: Some(dec(price)),
        purchased_price: Some(dec(purchased)),
        ..CanonicalOffer::default()
    }
}

pub fn stock(warehouse: &str, sku: &str, quantity: i64) -> CanonicalStock {
    CanonicalStock {
        sku: sku.into(),
        warehouse: warehouse.into(),
        quantity: Decimal::from(quantity),
    }
}

/// A temporary SQLite file, removed (with its WAL files) when dropped.
pub struct TempDb(pub PathBuf);

impl TempDb {
    pub fn new(name: &str) -> Self {
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

/// Records the fields of a span or an event as text, by name.
pub struct FieldText<'a>(pub &'a mut BTreeMap<String, String>);

impl Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}
