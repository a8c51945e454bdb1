//! Three engine instances on one PostgreSQL database (one schema they share), each with its
//! own client and store, against the simulator with 10 % faults and its quota enforced:
//! 1,000 orders and stock in two warehouses go out once, nothing is lost, no request is
//! refused with 429, and the work of an instance stopped abruptly mid-run is finished by the
//! others once its leases run out.
//!
//! The database comes from `KEYCRM_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::TryStreamExt;
use keycrm_api::mock::{KeyCrmMock, Quota, SeedConfig};
use keycrm_api::{Decimal, Paginate, types};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{
    CanonicalContact, CanonicalLine, CanonicalOrder, CanonicalStock, Mappings,
};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::store::{PostgresStore, Store};

const ORDERS: u32 = 1_000;
/// The simulator's quota for the one API key all instances share.
const QUOTA_PER_MINUTE: u32 = 6_000;

fn url() -> String {
    std::env::var("KEYCRM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn config() -> SyncConfig {
    SyncConfig {
        api_key: Secret::new("test"),
        source_id: Some(1),
        status_ids: BTreeMap::from([("new".to_string(), 1), ("approved".to_string(), 2)]),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1), ("lviv".to_string(), 2)]),
        retry_attempts: 1_000,
        ..SyncConfig::default()
    }
}

fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("WMS-{n}"),
        number: Some(format!("WMS-{n}")),
        status: Some("new".into()),
        buyer: CanonicalContact {
            name: Some(format!("Buyer {n}")),
            phone: Some(format!("+38050{n:07}")),
            email: None,
        },
        lines: vec![CanonicalLine {
            sku: format!("SKU-{}", n % 7),
            name: "Tea".into(),
            quantity: Decimal::from(1 + i64::from(n % 3)),
            price: "149.90".parse().unwrap(),
        }],
        ..CanonicalOrder::default()
    }
}

/// A schema for this test run, dropped at the end.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Self(format!(
            "kc_instances_{}_{}",
            std::process::id(),
            Utc::now().timestamp_subsec_nanos()
        ))
    }

    async fn drop_now(&self) {
        let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    }
}

type Engine = SyncEngine<PostgresStore, MemoryHost>;

/// One instance: its own client and pool, the shared schema and the shared quota row.
async fn instance(
    mock: &KeyCrmMock,
    schema: &Schema,
    host: &MemoryHost,
    n: u32,
    skew: &Arc<AtomicI64>,
) -> Engine {
    let store = PostgresStore::builder(url())
        .schema(&schema.0)
        .instance_id(format!("instance-{n}"))
        // Short leases: the stopped instance's work is free again after a few seconds.
        .lease(Duration::from_secs(3))
        .claim_limit(100)
        .pool_size(4)
        .connect()
        .await
        .unwrap();
    // Every instance books its requests from the one quota row of the API key.
    let client = mock
        .client_builder()
        .requests_per_minute(QUOTA_PER_MINUTE)
        .shared_quota(Arc::new(store.quota(mock.api_key())))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .max_retries(2)
        .build()
        .unwrap();
    let clock = skew.clone();
    SyncEngine::builder()
        .client(client)
        .store(store)
        .host(host.clone())
        .config(config())
        // Failed items are retried by the next run instead of after the engine's backoff.
        .outbox_clock(move || Utc::now() + chrono::Duration::seconds(clock.load(Ordering::Relaxed)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_the_work_and_the_quota() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::per_minute(QUOTA_PER_MINUTE))
        .start()
        .await;
    mock.seed(SeedConfig {
        products: 10,
        buyers: 0,
        companies: 0,
        orders: 0,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    let offers: Vec<types::Offer> = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap()
        .offer_list()
        .items()
        .try_collect()
        .await
        .unwrap();
    let skus: Vec<(i64, String)> = offers
        .iter()
        .take(20)
        .map(|o| (o.id.unwrap(), o.sku.clone().unwrap()))
        .collect();
    assert!(skus.len() >= 10, "{} offers seeded", skus.len());
    mock.clear_log();
    mock.faults().fail_share(0.10, 500, 15);

    let schema = Schema::new();
    let host = MemoryHost::new(Mappings::from_config(&config()));
    for n in 1..=ORDERS {
        host.put_order(order(n));
    }
    for (i, (_, sku)) in skus.iter().enumerate() {
        for (warehouse, level) in [("main", 100 + i as i64), ("lviv", 1 + i as i64)] {
            host.put_stock(CanonicalStock {
                sku: sku.clone(),
                warehouse: warehouse.into(),
                quantity: Decimal::from(level),
            });
        }
    }
    let skew = Arc::new(AtomicI64::new(0));
    let started = Instant::now();

    // The first instance is stopped abruptly in the middle of its first run, holding claimed
    // work; nothing of it is cleaned up.
    let doomed = instance(&mock, &schema, &host, 1, &skew).await;
    let run = tokio::spawn(async move {
        let _ = doomed.run_once().await;
    });
    while mock.count("order_import") + mock.count("order_create") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.abort();
    assert!(
        run.await.is_err_and(|e| e.is_cancelled()),
        "stopped mid-run"
    );

    let survivors = [
        instance(&mock, &schema, &host, 2, &skew).await,
        instance(&mock, &schema, &host, 3, &skew).await,
    ];
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 200, "not settled after {rounds} rounds");
        let reports =
            futures::future::join_all(survivors.iter().map(|engine| engine.run_once())).await;
        skew.fetch_add(2 * 3600, Ordering::Relaxed);
        let status = survivors[0].status().await.unwrap();
        let busy = reports.iter().any(|r| {
            r.as_ref()
                .map_or(true, |r| r.pushed + r.failed + r.collected > 0)
        });
        if status.outbox_depth == 0 && status.dead_letters == 0 && !busy {
            break;
        }
        if status.outbox_depth > 0 && !busy {
            // Only leased work of the stopped instance is left: wait for its leases.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let elapsed = started.elapsed();
    let served = mock.faults().served();
    mock.faults().clear();

    // Each order created exactly once, nothing lost.
    let mut by_uuid: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for id in mock.crm().order_ids() {
        let order = mock.crm().order(id).unwrap();
        if let Some(uuid) = order["source_uuid"].as_str() {
            by_uuid.entry(uuid.to_string()).or_default().push(id);
        }
    }
    assert_eq!(by_uuid.len(), ORDERS as usize, "every order reached KeyCRM");
    let twice: Vec<_> = by_uuid.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "created more than once: {twice:?}");
    let store = survivors[0].store();
    for n in 1..=ORDERS {
        let mapping = store
            .get_mapping(keycrm_sync::model::EntityKind::Order, &format!("WMS-{n}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("WMS-{n} has no mapping"));
        assert_eq!(mapping.remote_id, Some(by_uuid[&format!("WMS-{n}")][0]));
    }
    // Stock in both warehouses.
    for (i, (id, _)) in skus.iter().enumerate() {
        let (total, _) = mock.crm().stock(*id).unwrap();
        assert_eq!(
            total,
            Decimal::from(100 + i as i64 + 1 + i as i64),
            "offer {id}"
        );
    }
    // One quota for all: the simulator refused nothing, so the combined rate stayed within it.
    assert!(served > 0, "faults were served");
    assert_eq!(mock.rate_limited(), 0, "no request was refused with 429");
    let requests = mock.requests().len() as f64;
    let minutes = elapsed.as_secs_f64() / 60.0;
    assert!(
        requests <= f64::from(QUOTA_PER_MINUTE) * minutes.max(1.0),
        "{requests} requests in {elapsed:?}"
    );
    drop(survivors);
    schema.drop_now().await;
}
