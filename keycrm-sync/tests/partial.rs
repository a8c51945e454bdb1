//! One bad row does not block a batch: KeyCRM refuses a whole batch write with a 422 naming
//! the rows it cannot take (`stocks.3.sku`); the engine dead-letters those rows with KeyCRM's
//! message and delivers the others in the same run, never skipping another warehouse.

use std::collections::BTreeMap;

use keycrm_api::mock::KeyCrmMock;
use keycrm_api::{Decimal, Paginate};
use keycrm_sync::canonical::{CanonicalOffer, CanonicalOrder, CanonicalProduct, CanonicalStock};
use keycrm_sync::config::SyncConfig;
use keycrm_sync::model::{EntityKind, Snapshot};
use keycrm_sync::store::{Mapping, Store, SyncState};

mod support;
use support::{Rig, assert_linked, config_with, contact, line, rig_with, seed};

fn config() -> SyncConfig {
    config_with(&["new", "approved"], &[], &["main", "lviv"])
}

/// A rig whose simulator holds `products` products (and their offers), nothing else.
async fn rig(products: usize) -> Rig {
    let rig = rig_with(KeyCrmMock::builder(), config(), |b| b).await;
    if products > 0 {
        rig.mock.seed(seed(products, 0, 0));
    }
    rig
}

async fn skus(rig: &Rig, n: usize) -> Vec<String> {
    let skus = support::skus(rig.engine.client(), n).await;
    assert_eq!(skus.len(), n, "the simulator has {n} SKUs");
    skus
}

/// Stock of these SKUs per (warehouse id, SKU).
async fn remote_stock(rig: &Rig, skus: &[String]) -> BTreeMap<(i64, String), Decimal> {
    support::remote_stock(rig.engine.client(), skus).await
}

async fn dead(rig: &Rig, kind: EntityKind) -> Vec<(String, String)> {
    rig.engine
        .store()
        .dead_letters(Some(kind))
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.local_id, d.last_error.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn an_unknown_sku_among_twelve_valid_rows_is_dead_lettered_and_the_rest_delivered() {
    let rig = rig(20).await;
    let skus = skus(&rig, 15).await;
    rig.engine.run_once().await.unwrap();
    // Warehouse "main" (id 1, sent first): 12 valid rows and one SKU KeyCRM does not know.
    for (i, sku) in skus[..12].iter().enumerate() {
        rig.host.put_stock(CanonicalStock {
            sku: sku.clone(),
            warehouse: "main".into(),
            quantity: Decimal::from(100 + i as i64),
        });
    }
    rig.host.put_stock(CanonicalStock {
        sku: "NO-SUCH-SKU".into(),
        warehouse: "main".into(),
        quantity: Decimal::from(7),
    });
    // Warehouse "lviv" (id 2): must still be pushed.
    for (i, sku) in skus[12..].iter().enumerate() {
        rig.host.put_stock(CanonicalStock {
            sku: sku.clone(),
            warehouse: "lviv".into(),
            quantity: Decimal::from(200 + i as i64),
        });
    }
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();

    assert_eq!(report.pushed, 15, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    let stock = remote_stock(&rig, &skus).await;
    for (i, sku) in skus[..12].iter().enumerate() {
        assert_eq!(
            stock.get(&(1, sku.clone())),
            Some(&Decimal::from(100 + i as i64)),
            "main/{sku} delivered"
        );
    }
    for (i, sku) in skus[12..].iter().enumerate() {
        assert_eq!(
            stock.get(&(2, sku.clone())),
            Some(&Decimal::from(200 + i as i64)),
            "lviv/{sku} delivered"
        );
    }
    // Main: the refused request and the resend without the bad row; lviv: one.
    assert_eq!(rig.mock.count("offer_stock_update"), 3);
    let dead = dead(&rig, EntityKind::Stock).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "main/NO-SUCH-SKU");
    assert!(
        dead[0].1.contains("422") && dead[0].1.contains("is invalid"),
        "KeyCRM's message is kept: {}",
        dead[0].1
    );
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.dead_letters, 1);
    assert_eq!(status.per_kind[&EntityKind::Stock].error, 1);

    // The next run has nothing left to send.
    rig.mock.clear_log();
    let again = rig.engine.run_once().await.unwrap();
    assert_eq!(again.failed, 0, "{again:?}");
    assert_eq!(rig.mock.count("offer_stock_update"), 0);
}

fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        status: None,
        buyer: contact("Buyer", n),
        lines: vec![line(format!("SKU-{n}"), "Tea", 1, "10.00")],
        ..support::order(n)
    }
}

#[tokio::test]
async fn an_order_import_delivers_the_rows_keycrm_accepts() {
    let rig = rig(0).await;
    for n in 1..=6 {
        rig.host.put_order(order(n));
    }
    // A delivery service KeyCRM does not have: it refuses this row
    // (`orders.N.shipping.delivery_service_id`).
    let mut bad = order(7);
    bad.shipping.carrier_service_id = Some(987_654);
    rig.host.put_order(bad);
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.pushed, 6, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(rig.mock.crm().order_ids().len(), 6);
    assert_eq!(rig.mock.count("order_import"), 2);
    let dead = dead(&rig, EntityKind::Order).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "WMS-7");
    assert!(dead[0].1.contains("delivery_service_id"), "{}", dead[0].1);
    for n in 1..=6 {
        let m = rig
            .engine
            .store()
            .get_mapping(EntityKind::Order, &format!("WMS-{n}"))
            .await
            .unwrap()
            .unwrap();
        assert!(m.remote_id.is_some() && m.state == SyncState::Synced);
    }
}

#[tokio::test]
async fn a_product_import_delivers_the_rows_keycrm_accepts() {
    let rig = rig(0).await;
    for n in 1..=4 {
        rig.host.put_product(CanonicalProduct {
            local_id: format!("P-{n}"),
            sku: Some(format!("PS-{n}")),
            name: format!("Product {n}"),
            price: Some(Decimal::from(10 * n as i64)),
            ..CanonicalProduct::default()
        });
    }
    // A category KeyCRM does not have: this row is refused (`products.N.category_id`).
    rig.host.put_product(CanonicalProduct {
        local_id: "P-bad".into(),
        sku: Some("PS-bad".into()),
        name: "Bad".into(),
        category_id: Some(987_654),
        ..CanonicalProduct::default()
    });
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.pushed, 4, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(rig.mock.count("product_import"), 2);
    let dead = dead(&rig, EntityKind::Product).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "P-bad");
    assert!(dead[0].1.contains("category_id"), "{}", dead[0].1);
    for n in 1..=4 {
        assert_linked(rig.engine.store(), EntityKind::Product, &format!("P-{n}")).await;
    }
}

#[tokio::test]
async fn a_bulk_offer_update_delivers_the_rows_keycrm_accepts() {
    let rig = rig(10).await;
    let skus = skus(&rig, 5).await;
    rig.engine.run_once().await.unwrap();
    // The first run brought KeyCRM's offers to the host; the host changes five prices.
    let offers = rig
        .engine
        .client()
        .offer_list()
        .collect_all()
        .await
        .unwrap();
    for (i, sku) in skus.iter().enumerate() {
        let id = offers
            .iter()
            .find(|o| o.sku.as_deref() == Some(sku))
            .and_then(|o| o.id)
            .unwrap();
        let local_id = rig
            .engine
            .store()
            .get_mapping_by_remote(EntityKind::Offer, id)
            .await
            .unwrap()
            .expect("offer linked by the first run")
            .local_id;
        let mut offer = rig.host.offer(&local_id).unwrap();
        offer.price = Some(Decimal::from(500 + i as i64));
        rig.host.put_offer(offer);
    }
    // An offer mapped to an id KeyCRM no longer has: its row is refused (`offers.N.id`).
    rig.host.put_offer(CanonicalOffer {
        local_id: "O-gone".into(),
        sku: "GONE".into(),
        price: Some(Decimal::from(1)),
        ..CanonicalOffer::default()
    });
    let mut gone = Mapping::new(EntityKind::Offer, "O-gone");
    gone.remote_id = Some(9_999_999);
    gone.base = Some(Snapshot::default());
    rig.engine.store().put_mapping(&gone).await.unwrap();

    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.pushed, 5, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(rig.mock.count("offer_update_batch"), 2);
    let offers = rig
        .engine
        .client()
        .offer_list()
        .collect_all()
        .await
        .unwrap();
    for (i, sku) in skus.iter().enumerate() {
        let offer = offers
            .iter()
            .find(|o| o.sku.as_deref() == Some(sku))
            .unwrap();
        assert_eq!(offer.price, Some(Decimal::from(500 + i as i64)), "{sku}");
    }
    let dead = dead(&rig, EntityKind::Offer).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "O-gone");
}
