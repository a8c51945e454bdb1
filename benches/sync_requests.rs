//! Requests a mixed first sync costs: the engine against a naive one-request-per-item
//! client and against the theoretical minimum, side by side, on the KeyCRM simulator.
//!
//! ```sh
//! cargo bench --bench sync_requests            # N = 1000 records of each kind
//! cargo bench --bench sync_requests -- 200     # another N
//! ```

use std::collections::BTreeMap;

use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig};
use keycrm::api::{Decimal, Paginate};
use keycrm::sync::SyncEngine;
use keycrm::sync::canonical::{
    CanonicalBuyer, CanonicalContact, CanonicalLine, CanonicalOffer, CanonicalOrder,
    CanonicalStock, Mappings,
};
use keycrm::sync::config::{Secret, SyncConfig};
use keycrm::sync::host::MemoryHost;
use keycrm::sync::store::MemoryStore;

fn div_ceil(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(1000);
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    mock.seed(SeedConfig {
        products: n,
        orders: 0,
        buyers: 0,
        companies: 0,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    let offers = client.offer_list().collect_all().await.unwrap();
    let skus: Vec<String> = offers.iter().filter_map(|o| o.sku.clone()).collect();
    assert!(skus.len() >= n, "{} offers", skus.len());

    let config = SyncConfig {
        api_key: Secret::new("bench"),
        source_id: Some(1),
        status_ids: BTreeMap::from([("new".to_string(), 1)]),
        payment_method_ids: (1..=5).map(|i| (format!("m{i}"), i)).collect(),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1), ("lviv".to_string(), 2)]),
        ..SyncConfig::default()
    };
    let host = MemoryHost::new(Mappings::from_config(&config));
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
                sku: skus[i % skus.len()].clone(),
                name: "Товар".into(),
                quantity: Decimal::from(1),
                price: Decimal::from(100),
            }],
            ..CanonicalOrder::default()
        });
        host.put_buyer(CanonicalBuyer {
            local_id: format!("C-{i}"),
            name: format!("Клієнт {i}"),
            phones: vec![format!("+38093{i:07}")],
            ..CanonicalBuyer::default()
        });
        host.put_offer(CanonicalOffer {
            local_id: format!("O-{i}"),
            sku: skus[i].clone(),
            price: Some(Decimal::from(200 + i as i64)),
            ..CanonicalOffer::default()
        });
        host.put_stock(CanonicalStock {
            sku: skus[i].clone(),
            warehouse: "main".into(),
            quantity: Decimal::from(i as i64 % 50 + 1),
        });
    }
    let engine = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .build()
        .unwrap();

    mock.clear_log();
    let first = engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    let requests = mock.requests();
    let ops = |names: &[&str]| {
        requests
            .iter()
            .filter(|r| r.operation.is_some_and(|o| names.contains(&o)))
            .count()
    };
    let reads_pull = requests.iter().filter(|r| r.method == "GET").count();

    let order_writes = ops(&[
        "order_import",
        "order_create",
        "order_update",
        "order_payment_create",
    ]);
    let buyer_ops = ops(&["buyer_create", "buyer_update"]);
    let offer_writes = ops(&["offer_update_batch"]);
    let stock_writes = ops(&["offer_stock_update"]);

    println!("mixed first sync, N = {n} records of each kind (simulator, pacing off)");
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "kind", "naive", "engine", "minimum"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "orders (create)",
        n,
        order_writes,
        div_ceil(n, 50)
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "buyers (create)", n, buyer_ops, n
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "offer prices",
        n,
        offer_writes,
        div_ceil(n, 10_000)
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "stock levels (1 warehouse)",
        n,
        stock_writes,
        div_ceil(n, 10_000)
    );
    let naive = 4 * n;
    let engine_writes = order_writes + buyer_ops + offer_writes + stock_writes;
    // Buyers: KeyCRM's bulk buyer import returns no ids and buyers have no unique key to read
    // them back by, so one create each (after a match look-up, to never duplicate one).
    let minimum = div_ceil(n, 50) + n + 2 * div_ceil(n, 10_000);
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "writes, total", naive, engine_writes, minimum
    );
    let buyer_lookups = requests
        .iter()
        .filter(|r| {
            r.operation == Some("buyer_list")
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains("buyer_phone"))
        })
        .count();
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "buyer match look-ups", "-", buyer_lookups, n
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "other reads",
        "-",
        reads_pull - buyer_lookups,
        2 * div_ceil(n, 50)
    );
    println!(
        "all requests: engine {} vs naive {naive} ({:.1} % of naive)",
        requests.len(),
        100.0 * requests.len() as f64 / naive as f64
    );
    println!(
        "at 60 requests/min: engine {:.1} min, naive {:.1} min",
        requests.len() as f64 / 60.0,
        naive as f64 / 60.0
    );

    mock.clear_log();
    let second = engine.run_once().await.unwrap();
    let writes = mock.requests().iter().filter(|r| r.method != "GET").count();
    println!(
        "second run, nothing changed: {writes} writes, {} requests in all (reconciliation reads)",
        mock.requests().len()
    );
    assert_eq!(writes, 0, "{second:?}");
}
