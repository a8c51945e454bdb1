//! The sync engine against the KeyCRM simulator: convergence both ways, request economy,
//! conflicts, interruption and faults.

use std::collections::BTreeMap;

use keycrm_api::Decimal;
use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{
    CanonicalBuyer, CanonicalContact, CanonicalLine, CanonicalOrder, CanonicalStock, Mappings,
};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::store::MemoryStore;

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

async fn rig() -> Rig {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    let config = config();
    let host = MemoryHost::new(Mappings::from_config(&config));
    let engine = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .build()
        .unwrap();
    Rig { mock, host, engine }
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
