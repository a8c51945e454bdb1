//! The catalogue: products, offers, prices and stock converge both ways.

use std::collections::BTreeMap;

use keycrm_api::types;
use keycrm_sync::canonical;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::Store;

use crate::support::{
    dec, offer, product, remote_id, remote_offer, remote_stock, rig, run_to_full_pass, settle,
    stock, writes,
};

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
