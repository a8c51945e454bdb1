//! Stock: one request per warehouse, however many rows, and a stock webhook brings KeyCRM's
//! change to the host.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use keycrm_api::Paginate;
use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_api::{Decimal, types};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::CanonicalStock;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::store::SqliteStore;

use crate::support::{
    SqliteRig, config, dec, mappings, offer, product, remote_offer, remote_stock, rig, rig_with,
    seed, stock, writes,
};

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
    rig.mock.seed(seed(7_200, 0, 0));
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
