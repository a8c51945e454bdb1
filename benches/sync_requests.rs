//! The engine's yardstick: requests per phase and kind against a naive client (one request
//! per item) and against the theoretical minimum KeyCRM's batch limits allow, on the KeyCRM
//! simulator, with the wall time each would take at 60 requests a minute.
//!
//! ```sh
//! cargo bench --bench sync_requests                 # N = 1000, M = 200
//! cargo bench --bench sync_requests -- 200 50       # N = 200, M = 50
//! ```
//!
//! Workload:
//! - (a) first sync of N orders, N buyers, N offers with prices (their products: the 80 %
//!   new ones created, the 20 % existing ones KeyCRM's, linked through their offers' SKUs)
//!   and their stock in 2 warehouses; 20 % of the buyers already exist in KeyCRM and must be
//!   linked, not created again;
//! - (b) M updates of each kind, one run per kind: order status, order comment, a new payment,
//!   a tracking code, offer price, stock level (half in each warehouse);
//! - (c) an idle run right after (b);
//! - webhooks: one order status event, then a burst of 200, receipt to host.
//!
//! The minimum, per row (`⌈x/k⌉` = requests of k items):
//! - orders: `3·⌈N/50⌉` — a look-up by `filter[source_uuid]` (a create must never be sent twice;
//!   50 values a page), `POST /order/import` (50 a request), a read-back by `source_uuid`
//!   (the import answers no ids);
//! - buyers: `3·⌈0.8N/50⌉` — the existing 20 % are linked by the first sync's full read of
//!   KeyCRM's buyers (counted under reconciliation); the others need a look-up by comma lists
//!   of phones (50 a request: KeyCRM's own matching may know a number written another way),
//!   `POST /buyer/import` (no documented limit; 50 so that one page reads them back) and a
//!   read-back by the same phones (the import answers `{"status": true}`, no ids);
//! - products: `⌈0.8N/100⌉ + ⌈0.8N/50⌉` — `POST /products/import` (100 a request) and a
//!   read-back by SKU (`GET /offers?filter[sku]`, 50 a page; the import answers
//!   `{"status": true}`, no ids). No look-up before the import: the first sync's complete
//!   read of KeyCRM's offers (counted under reconciliation) shows which SKUs KeyCRM has, and
//!   the new ones are not among them (a SKU matches exactly, unlike a phone); the read-back
//!   also gives the ids of the offers KeyCRM created with the products, so the prices need
//!   no look-up either;
//! - prices: `⌈N/10000⌉` (`PUT /offers` takes 10,000 rows); stock: one `PUT /offers/stocks`
//!   per warehouse per 10,000 rows;
//! - reconciliation reads in (a): one page of 50 per existing record of each feed read in full
//!   (at least one request per feed), plus the order statuses (one request) — the first sync
//!   must bring KeyCRM's records to the host;
//! - reconciliation reads in (b) and (c): per run, per incremental feed, `⌈w/50⌉` pages (at
//!   least one request), where w is the number of records of that feed the run before wrote
//!   (its push comes after its pull, so they are new to this run): orders by
//!   `updated_between`, orders by `created_between` (matched against `ordered_at`, which is
//!   the create's time), buyers by `updated_between` (the engine's buyer imports, and the
//!   buyers KeyCRM makes for the orders it imports). KeyCRM forces this: the filters of
//!   `GET /order` are `status_id`, `source_id`, `source_uuid`, `buyer_phone`, `buyer_email`,
//!   `created_between`, `updated_between`, `shipping_between`, `payment_status` and
//!   `has_tracking_code`, those of `GET /buyer` `buyer_id`, `buyer_phone`, `buyer_email`,
//!   `created_between` and `updated_between`: none leaves out the records a client wrote
//!   itself, and none is a negation, so a feed's window returns the engine's own writes with
//!   everyone else's. w is counted on the simulator after each run (the `total` of one
//!   filtered page per feed over the run's second, outside the counted requests);
//! - updates: one request per order change (KeyCRM has no bulk order update; status,
//!   comment and tracking travel in one `PUT /order/{id}`, a payment is one
//!   `POST /order/{id}/payment`), `⌈M/10000⌉` for prices, one per warehouse for stock;
//! - idle: one request per incremental feed (orders by `updated_between`, orders by
//!   `created_between`, buyers by `updated_between`); (b)'s last run writes stock only, so
//!   (c) reads no page beyond those;
//! - webhooks: one event is one `GET /order/{id}`; a burst of k events `⌈k/50⌉` pages of
//!   `GET /order?filter[updated_between]` (the order list has no id filter).
//!
//! Time: the simulator and the engine's client share one
//! [`VirtualClock`](keycrm::api::clock::VirtualClock), moved forward by the configuration's
//! `sync_interval_secs` before each run, as a deployment's runs are spaced (the setup's
//! records are that much older than the first sync, too). Nothing waits: the clock moves
//! only between runs, and the simulator stamps each write a microsecond after the one before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use keycrm::api::clock::{Clock, VirtualClock};

use keycrm::api::mock::{KeyCrmMock, Quota, RecordedRequest, SeedConfig};
use keycrm::api::{Client, Decimal, Paginate, Timestamp};
use keycrm::sync::SyncEngine;
use keycrm::sync::canonical::{
    CanonicalBuyer, CanonicalContact, CanonicalLine, CanonicalOffer, CanonicalOrder,
    CanonicalPayment, CanonicalProduct, CanonicalStock, Mappings, PaymentStatus,
};
use keycrm::sync::config::{Secret, SyncConfig};
use keycrm::sync::host::MemoryHost;
use keycrm::sync::store::MemoryStore;

/// Requests per minute of KeyCRM's quota.
const RATE: f64 = 60.0;

fn pages(n: usize, per: usize) -> usize {
    n.div_ceil(per)
}

fn has_filter(r: &RecordedRequest, key: &str) -> bool {
    r.query.as_deref().is_some_and(|q| {
        q.contains(&format!("filter[{key}]")) || q.contains(&format!("filter%5B{key}%5D"))
    })
}

/// The kind a request works for (reconciliation reads apart).
fn kind_of(r: &RecordedRequest) -> &'static str {
    let op = r.operation.unwrap_or("");
    match op {
        "order_list" if has_filter(r, "source_uuid") => "orders",
        "order_import" | "order_create" | "order_update" | "order_get" => "orders",
        "order_payment_create" | "order_payment_update" => "orders",
        "buyer_list" if has_filter(r, "buyer_phone") || has_filter(r, "buyer_email") => "buyers",
        "buyer_import" | "buyer_create" | "buyer_update" => "buyers",
        "offer_list" if has_filter(r, "sku") => "products",
        "product_import" | "product_create" | "product_update" | "product_offer_create" => {
            "products"
        }
        "offer_update_batch" => "prices",
        "offer_stock_update" => "stock",
        _ => "reconciliation",
    }
}

fn by_kind(requests: &[RecordedRequest]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        *out.entry(kind_of(r)).or_default() += 1;
    }
    out
}

/// The incremental feeds, in the order the engine reads them.
const FEEDS: [&str; 3] = ["orders updated", "orders created", "buyers updated"];

/// The feed a reconciliation read belongs to, if it is one of [`FEEDS`].
fn feed_of(r: &RecordedRequest) -> Option<usize> {
    match r.operation? {
        "order_list" if has_filter(r, "updated_between") => Some(0),
        "order_list" if has_filter(r, "created_between") => Some(1),
        "buyer_list" if has_filter(r, "updated_between") => Some(2),
        _ => None,
    }
}

/// Reconciliation reads per feed, and the other reconciliation reads.
fn feed_reads(requests: &[RecordedRequest]) -> ([usize; 3], usize) {
    let mut feeds = [0; 3];
    let mut other = 0;
    for r in requests.iter().filter(|r| kind_of(r) == "reconciliation") {
        match feed_of(r) {
            Some(f) => feeds[f] += 1,
            None => other += 1,
        }
    }
    (feeds, other)
}

/// How many records of each feed KeyCRM has with a stamp in `since`'s second or later: what
/// a run that started in that second wrote (read with one filtered page per feed, each
/// answering its `total`).
async fn written_since(client: &Client, since: DateTime<Utc>) -> [usize; 3] {
    let window = keycrm::api::filter::between(
        Timestamp::from(since),
        Timestamp::from(since + chrono::Duration::minutes(1)),
    );
    let total = |t: Option<i64>| t.map_or(0, |t| t as usize);
    let updated = client
        .order_list()
        .limit(1u64)
        .filter_updated_between(window.clone())
        .send()
        .await
        .unwrap()
        .into_inner()
        .total;
    let created = client
        .order_list()
        .limit(1u64)
        .filter_created_between(window.clone())
        .send()
        .await
        .unwrap()
        .into_inner()
        .total;
    let buyers = client
        .buyer_list()
        .limit(1u64)
        .filter_updated_between(window)
        .send()
        .await
        .unwrap()
        .into_inner()
        .total;
    [total(updated), total(created), total(buyers)]
}

/// The fewest reads of the feeds after a run that wrote `written`: `⌈w/50⌉` pages per feed,
/// at least one request.
fn feed_minimum(written: [usize; 3]) -> [usize; 3] {
    written.map(|w| pages(w, 50).max(1))
}

struct Table {
    rows: Vec<(String, usize, usize, usize)>,
}

impl Table {
    fn new() -> Self {
        Self { rows: Vec::new() }
    }

    fn row(&mut self, name: impl Into<String>, engine: usize, naive: usize, minimum: usize) {
        self.rows.push((name.into(), engine, naive, minimum));
    }

    fn print(&self, title: &str) {
        println!("\n{title}");
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>9} {:>12} {:>12}",
            "kind", "engine", "naive", "minimum", "eng/min", "engine time", "naive time"
        );
        let (mut e, mut n, mut m) = (0, 0, 0);
        for (name, engine, naive, minimum) in &self.rows {
            Self::line(name, *engine, *naive, *minimum);
            e += engine;
            n += naive;
            m += minimum;
        }
        Self::line("total", e, n, m);
    }

    fn line(name: &str, engine: usize, naive: usize, minimum: usize) {
        let ratio = if minimum == 0 {
            if engine == 0 {
                "1.00".to_string()
            } else {
                "-".to_string()
            }
        } else {
            format!("{:.2}", engine as f64 / minimum as f64)
        };
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>9} {:>10.1} m {:>10.1} m",
            name,
            engine,
            naive,
            minimum,
            ratio,
            engine as f64 / RATE,
            naive as f64 / RATE
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().filter_map(|a| a.parse::<usize>().ok());
    let n = args.next().unwrap_or(1000);
    let m = args.next().unwrap_or(200).min(n);
    let existing = n / 5;
    let new = n - existing;

    // KeyCRM's time and the engine's, moved by the bench only.
    let clock = Arc::new(VirtualClock::new());
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .clock(clock.clone())
        .start()
        .await;
    mock.seed(SeedConfig {
        products: existing,
        orders: 0,
        buyers: 0,
        companies: 0,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    // The simulator's client builder carries its clock.
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    // The existing 20 %: products (seeded, one SKU each taken) and buyers.
    let offers = client.offer_list().collect_all().await.unwrap();
    let mut seen_products = std::collections::BTreeSet::new();
    let existing_skus: Vec<String> = offers
        .iter()
        .filter(|o| o.product_id.is_some_and(|p| seen_products.insert(p)))
        .filter_map(|o| o.sku.clone())
        .take(existing)
        .collect();
    assert_eq!(existing_skus.len(), existing, "one SKU per seeded product");
    let buyer_rows: Vec<keycrm::api::types::BuyerImportItem> = (0..existing)
        .map(|i| keycrm::api::types::BuyerImportItem {
            full_name: Some(format!("Клієнт {i}")),
            phone: vec![format!("+38093{i:07}")],
            ..Default::default()
        })
        .collect();
    for chunk in buyer_rows.chunks(50) {
        client
            .buyer_import()
            .body(keycrm::api::types::BuyerImport {
                buyers: chunk.to_vec(),
            })
            .send()
            .await
            .unwrap();
    }
    let remote_offers = offers.len();
    let remote_products = seen_products.len();

    let config = SyncConfig {
        api_key: Secret::new("bench"),
        source_id: Some(1),
        status_ids: BTreeMap::from([
            ("new".to_string(), 1),
            ("approved".to_string(), 2),
            ("shipped".to_string(), 4),
            ("completed".to_string(), 5),
        ]),
        payment_method_ids: (1..=5).map(|i| (format!("m{i}"), i)).collect(),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1), ("lviv".to_string(), 2)]),
        ..SyncConfig::default()
    };
    let host = MemoryHost::new(Mappings::from_config(&config));
    let sku = |i: usize| -> String {
        if i < existing {
            existing_skus[i].clone()
        } else {
            format!("NEW-{i:06}")
        }
    };
    for i in 0..n {
        host.put_order(CanonicalOrder {
            local_id: format!("WMS-{i}"),
            number: Some(format!("WMS-{i}")),
            status: Some("new".into()),
            buyer: CanonicalContact {
                name: Some(format!("Покупець {i}")),
                phone: Some(format!("+38067{i:07}")),
                email: None,
            },
            lines: vec![CanonicalLine {
                sku: sku(i),
                name: "Товар".into(),
                quantity: Decimal::from(1),
                price: Decimal::from(100),
            }],
            ..CanonicalOrder::default()
        });
        // Written the national way: the engine matches in E.164.
        host.put_buyer(CanonicalBuyer {
            local_id: format!("C-{i}"),
            name: format!("Клієнт {i}"),
            phones: vec![format!("093{i:07}")],
            ..CanonicalBuyer::default()
        });
        // The existing 20 % are KeyCRM's products already: their offers are linked by SKU.
        if i >= existing {
            host.put_product(CanonicalProduct {
                local_id: format!("P-{i}"),
                sku: Some(sku(i)),
                name: format!("Товар {i}"),
                price: Some(Decimal::from(200 + i as i64)),
                ..CanonicalProduct::default()
            });
        }
        host.put_offer(CanonicalOffer {
            local_id: format!("O-{i}"),
            sku: sku(i),
            price: Some(Decimal::from(200 + i as i64)),
            ..CanonicalOffer::default()
        });
        for warehouse in ["main", "lviv"] {
            host.put_stock(CanonicalStock {
                sku: sku(i),
                warehouse: warehouse.into(),
                quantity: Decimal::from(i as i64 % 50 + 1),
            });
        }
    }
    let interval = config.sync_interval();
    // A run starts `sync_interval_secs` after the one before (and after the setup); returns
    // the run's time.
    let next_run = || {
        clock.advance(interval);
        DateTime::<Utc>::from(clock.wall_time())
    };
    let engine = SyncEngine::builder()
        .client(client.clone())
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .build()
        .unwrap();

    // (a) First sync.
    let mut run_at = next_run();
    mock.clear_log();
    let first = engine.run_once().await.unwrap();
    let log = mock.requests();
    let a = by_kind(&log);
    let mut table = Table::new();
    let get = |k: &BTreeMap<&str, usize>, kind: &str| k.get(kind).copied().unwrap_or(0);
    table.row("orders (create)", get(&a, "orders"), n, 3 * pages(n, 50));
    table.row(
        "buyers (20 % linked, create)",
        get(&a, "buyers"),
        n,
        3 * pages(new, 50),
    );
    table.row(
        "products (80 % new, create)",
        get(&a, "products"),
        n,
        pages(new, 100) + pages(new, 50),
    );
    table.row(
        "offer prices (20 % linked by SKU)",
        get(&a, "prices"),
        n,
        pages(n, 10_000),
    );
    table.row(
        "stock (2 warehouses)",
        get(&a, "stock"),
        2 * n,
        2 * pages(n, 10_000),
    );
    // Feeds read in full: orders (none yet), buyers, products, offers, stock; statuses.
    let recon_min = 1
        + pages(existing, 50).max(1)
        + pages(remote_products, 50).max(1)
        + pages(remote_offers, 50).max(1)
        + pages(remote_offers, 50).max(1)
        + 1;
    table.row(
        "reconciliation reads",
        get(&a, "reconciliation"),
        get(&a, "reconciliation"),
        recon_min,
    );
    table.print(&format!(
        "(a) first sync, N = {n} of each kind ({} failed)",
        first.failed
    ));

    // (b) M updates of each kind, one run per kind.
    let mut table = Table::new();
    let mut recon_b = 0;
    let mut recon_b_min = 0;
    let mut per_run = Vec::new();
    let kinds: [(&str, &str, usize); 6] = [
        ("order status", "orders", m),
        ("order comment", "orders", m),
        ("payment (new)", "orders", m),
        ("tracking code", "orders", m),
        ("offer price", "prices", pages(m, 10_000)),
        ("stock level", "stock", 2 * pages(m.div_ceil(2), 10_000)),
    ];
    for (step, (name, kind, minimum)) in kinds.iter().enumerate() {
        for i in 0..m {
            let id = format!("WMS-{i}");
            match step {
                0 => {
                    host.edit_order(&id, |o| o.status = Some("approved".into()));
                }
                1 => {
                    host.edit_order(&id, |o| o.comment = Some(format!("коментар {i}")));
                }
                2 => {
                    host.edit_order(&id, |o| {
                        o.payments.push(CanonicalPayment {
                            method: "m1".into(),
                            amount: Decimal::from(100),
                            status: PaymentStatus::Paid,
                            reference: Some(format!("PAY-{i}")),
                        })
                    });
                }
                3 => {
                    host.edit_order(&id, |o| {
                        o.shipping.tracking_code = Some(format!("2045000{i:07}"))
                    });
                }
                4 => host.put_offer(CanonicalOffer {
                    local_id: format!("O-{i}"),
                    sku: sku(i),
                    price: Some(Decimal::from(300 + i as i64)),
                    ..CanonicalOffer::default()
                }),
                _ => host.put_stock(CanonicalStock {
                    sku: sku(i),
                    warehouse: if i % 2 == 0 { "main" } else { "lviv" }.into(),
                    quantity: Decimal::from(77),
                }),
            }
        }
        // What the run before wrote: this run's feeds must read it.
        let written = written_since(&client, run_at).await;
        run_at = next_run();
        mock.clear_log();
        let report = engine.run_once().await.unwrap();
        assert_eq!(report.failed, 0, "{name}: {report:?}");
        let log = mock.requests();
        let b = by_kind(&log);
        table.row(*name, get(&b, kind), m, *minimum);
        let (feeds, other) = feed_reads(&log);
        let min = feed_minimum(written);
        recon_b += get(&b, "reconciliation");
        recon_b_min += min.iter().sum::<usize>();
        per_run.push((*name, written, feeds, min, other));
    }
    table.row(
        "reconciliation reads (6 runs)",
        recon_b,
        recon_b,
        recon_b_min,
    );
    table.print(&format!("(b) M = {m} updates of each kind"));

    // (c) Idle, one interval after (b).
    let written = written_since(&client, run_at).await;
    next_run();
    mock.clear_log();
    let idle = engine.run_once().await.unwrap();
    let log = mock.requests();
    let idle_requests = log.len();
    let (feeds, other) = feed_reads(&log);
    let idle_min = feed_minimum(written);
    per_run.push(("(c) idle", written, feeds, idle_min, other));
    let mut table = Table::new();
    table.row(
        "idle run (after own writes)",
        idle_requests,
        3,
        idle_min.iter().sum(),
    );
    table.print(&format!(
        "(c) idle run ({} writes)",
        log.iter().filter(|r| r.method != "GET").count()
    ));
    assert_eq!(idle.pushed, 0, "{idle:?}");

    // Per run: what the run before wrote on each feed, and the pages read of it.
    println!(
        "
reconciliation per run: written by the run before / read (minimum), per feed"
    );
    println!(
        "{:<16} {:>22} {:>22} {:>22} {:>6}",
        "run", FEEDS[0], FEEDS[1], FEEDS[2], "other"
    );
    for (name, written, feeds, min, other) in &per_run {
        let cell = |f: usize| format!("{} / {} ({})", written[f], feeds[f], min[f]);
        println!(
            "{:<16} {:>22} {:>22} {:>22} {:>6}",
            name,
            cell(0),
            cell(1),
            cell(2),
            other
        );
    }

    // Webhooks: receipt to host, one event and a burst of 200.
    println!("\nwebhooks: order status changes in the CRM, receipt to host");
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>14} {:>14} {:>14}",
        "events", "engine", "naive", "minimum", "status p50/p99", "record p50/p99", "naive p50/p99"
    );
    let remote_ids = mock.crm().order_ids();
    for (count, status) in [(1usize, 4i64), (200.min(remote_ids.len()), 5)] {
        let ids = &remote_ids[..count];
        for &id in ids {
            mock.crm().set_order_status(id, status);
        }
        mock.clear_log();
        let started = Instant::now();
        for &id in ids {
            let context = mock.crm().order(id).unwrap();
            let body =
                serde_json::json!({"event": "order.change_order_status", "context": context});
            engine.ingest_webhook(&body).await.unwrap();
        }
        engine.apply_inbox().await.unwrap();
        let wall = started.elapsed().as_secs_f64();
        let used = mock.request_count();
        // In a burst the statuses reach the host before any request (the context is
        // authoritative); a single event is one read. The rest of each record arrives after
        // the requests, paced at 60/min.
        let record_latency = wall + used as f64 * 60.0 / RATE;
        let status_latency = if count > 1 { wall } else { record_latency };
        let mut naive: Vec<f64> = (1..=count).map(|i| i as f64 * 60.0 / RATE).collect();
        naive.sort_by(f64::total_cmp);
        let minimum = if count == 1 { 1 } else { pages(count, 50) };
        println!(
            "{:<12} {:>8} {:>8} {:>8} {:>6.2}/{:<6.2}s {:>6.1}/{:<6.1}s {:>6.1}/{:<6.1}s",
            count,
            used,
            count,
            minimum,
            status_latency,
            status_latency,
            record_latency,
            record_latency,
            percentile(&naive, 0.5),
            percentile(&naive, 0.99),
        );
    }
    println!(
        "\nat {RATE}/min; 'status' = host has the new status, 'record' = the whole order re-read"
    );
}
