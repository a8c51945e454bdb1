//! Exact request counts of the products' push, read from the simulator's request log: a
//! product is created by `POST /products/import` (100 a request) and read back by SKU
//! (`GET /offers?filter[sku]`, 50 a request; the import answers no ids). A SKU is looked up
//! before its create unless a complete full read of KeyCRM's offers in the same run showed it
//! absent, and the offers created with the products are linked from that read-back, not
//! looked up again.

use std::collections::BTreeMap;

use keycrm_api::mock::{KeyCrmMock, Quota, RecordedRequest};
use keycrm_api::{Client, Decimal, Paginate, types};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{CanonicalOffer, CanonicalProduct, Mappings};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{MemoryStore, Store};

fn config() -> SyncConfig {
    SyncConfig {
        api_key: Secret::new("test"),
        source_id: Some(1),
        status_ids: BTreeMap::from([("new".to_string(), 1)]),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1)]),
        ..SyncConfig::default()
    }
}

struct Rig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: SyncEngine<MemoryStore, MemoryHost>,
}

async fn rig() -> Rig {
    let config = config();
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let host = MemoryHost::new(Mappings::from_config(&config));
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    let engine = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .build()
        .unwrap();
    Rig { mock, host, engine }
}

impl Rig {
    fn client(&self) -> &Client {
        self.engine.client()
    }

    /// `GET /offers?filter[sku]=..` requests (look-ups and read-backs by SKU).
    fn sku_reads(&self) -> usize {
        self.mock
            .requests()
            .iter()
            .filter(|r| r.operation == Some("offer_list") && filters_by_sku(r))
            .count()
    }

    /// Creates products in KeyCRM directly (not through the engine), 100 per import.
    async fn remote_products(&self, skus: &[String]) {
        let products: Vec<types::ProductCreate> = skus
            .iter()
            .map(|sku| {
                types::ProductCreate::builder()
                    .name(name(sku))
                    .sku(Some(sku.clone()))
                    .price(Some(price(sku)))
                    .try_into()
                    .unwrap()
            })
            .collect();
        for chunk in products.chunks(100) {
            self.client()
                .product_import()
                .body(types::ProductImport {
                    products: chunk.to_vec(),
                })
                .send()
                .await
                .unwrap();
        }
    }

    /// The host's product and its offer for a SKU: the same name and price as
    /// [`Rig::remote_products`] gives it, the offer's price one more (a price to send).
    fn local_product(&self, sku: &str) {
        self.host.put_product(CanonicalProduct {
            local_id: format!("P-{sku}"),
            sku: Some(sku.to_string()),
            name: name(sku),
            price: Some(price(sku)),
            ..CanonicalProduct::default()
        });
        self.host.put_offer(CanonicalOffer {
            local_id: format!("O-{sku}"),
            sku: sku.to_string(),
            price: Some(offer_price(sku)),
            ..CanonicalOffer::default()
        });
    }

    async fn remote_id(&self, kind: EntityKind, local_id: &str) -> Option<i64> {
        self.engine
            .store()
            .get_mapping(kind, local_id)
            .await
            .unwrap()
            .and_then(|m| m.remote_id)
    }

    /// KeyCRM's offers by SKU.
    async fn offers(&self) -> BTreeMap<String, types::Offer> {
        self.client()
            .offer_list()
            .collect_all()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|o| Some((o.sku.clone()?, o)))
            .collect()
    }

    /// Every SKU is one KeyCRM product and offer, linked to the host's product and offer,
    /// and the offer has the host's price.
    async fn assert_linked_once(&self, skus: &[String]) {
        let products = self.client().product_list().collect_all().await.unwrap();
        let offers = self.offers().await;
        for sku in skus {
            let with_sku: Vec<&types::Product> = products
                .iter()
                .filter(|p| p.sku.as_deref() == Some(sku.as_str()))
                .collect();
            assert_eq!(with_sku.len(), 1, "{sku} created once");
            assert_eq!(
                self.remote_id(EntityKind::Product, &format!("P-{sku}"))
                    .await,
                with_sku[0].id,
                "{sku}: product linked"
            );
            let offer = &offers[sku];
            assert_eq!(
                self.remote_id(EntityKind::Offer, &format!("O-{sku}")).await,
                offer.id,
                "{sku}: offer linked"
            );
            assert_eq!(offer.price, Some(offer_price(sku)), "{sku}");
        }
    }
}

fn filters_by_sku(r: &RecordedRequest) -> bool {
    r.query
        .as_deref()
        .is_some_and(|q| q.contains("filter[sku]") || q.contains("filter%5Bsku%5D"))
}

fn name(sku: &str) -> String {
    format!("Product {sku}")
}

fn price(sku: &str) -> Decimal {
    Decimal::from(10 + sku.len() as i64)
}

/// The host's offer price: one more than its product's (a price to send).
fn offer_price(sku: &str) -> Decimal {
    Decimal::from(11 + sku.len() as i64)
}

fn skus(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:04}")).collect()
}

#[tokio::test]
async fn the_first_sync_creates_new_products_without_looking_their_skus_up() {
    let rig = rig().await;
    // 50 of the host's 250 products are KeyCRM's already.
    let existing = skus("OLD", 50);
    let new = skus("NEW", 200);
    rig.remote_products(&existing).await;
    for sku in existing.iter().chain(&new) {
        rig.local_product(sku);
    }
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert!(
        report.full_pass,
        "the first run reads the catalogue in full"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    // The full read showed the 200 new SKUs absent (and linked the 50 existing products):
    // no look-up; two imports; the 200 read back in 4 pages, which also give the offers.
    assert_eq!(rig.mock.count("product_import"), 2);
    assert_eq!(rig.sku_reads(), 4, "read-back only");
    assert_eq!(rig.mock.count("product_create"), 0);
    assert_eq!(rig.mock.count("product_update"), 0);
    assert_eq!(
        rig.mock.count("offer_update_batch"),
        1,
        "all prices at once"
    );
    let all: Vec<String> = existing.iter().chain(&new).cloned().collect();
    rig.assert_linked_once(&all).await;
}

#[tokio::test]
async fn a_run_without_a_full_read_looks_every_new_sku_up_before_creating() {
    let rig = rig().await;
    let first = skus("A", 10);
    for sku in &first {
        rig.local_product(sku);
    }
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    // 120 new host products; one of them KeyCRM got meanwhile from elsewhere.
    let new = skus("B", 120);
    rig.remote_products(&new[..1]).await;
    for sku in &new {
        rig.local_product(sku);
    }
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert!(!report.full_pass);
    assert_eq!(report.failed, 0, "{report:?}");
    // Look-up of 120 SKUs: 3 pages; 119 created in 2 imports (100 + 19), read back in 3.
    assert_eq!(rig.mock.count("product_import"), 2);
    assert_eq!(rig.sku_reads(), 3 + 3);
    assert_eq!(rig.mock.count("product_create"), 0);
    assert_eq!(rig.mock.count("offer_update_batch"), 1);
    let all: Vec<String> = first.iter().chain(&new).cloned().collect();
    rig.assert_linked_once(&all).await;
}

#[tokio::test]
async fn a_sku_keycrm_listed_is_looked_up_and_never_created_again() {
    let rig = rig().await;
    // KeyCRM has DUP-0000; two host products carry it. The full read links one of them; the
    // other is looked up (KeyCRM listed the SKU), not created, and fails alone: one KeyCRM
    // product cannot be linked to two host products.
    let dup = skus("DUP", 1);
    let new = skus("NEW", 3);
    rig.remote_products(&dup).await;
    for sku in dup.iter().chain(&new) {
        rig.local_product(sku);
    }
    rig.host.put_product(CanonicalProduct {
        local_id: "P-twin".into(),
        sku: Some(dup[0].clone()),
        name: name(&dup[0]),
        price: Some(price(&dup[0])),
        ..CanonicalProduct::default()
    });
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert!(report.full_pass);
    assert_eq!(report.failed, 1, "the twin only: {report:?}");
    // One look-up (the listed SKU), one import of the 3 new ones, one read-back.
    assert_eq!(rig.sku_reads(), 1 + 1);
    assert_eq!(rig.mock.count("product_import"), 1);
    let all: Vec<String> = dup.iter().chain(&new).cloned().collect();
    rig.assert_linked_once(&all).await;
    assert_eq!(rig.remote_id(EntityKind::Product, "P-twin").await, None);
}

#[tokio::test]
async fn two_host_products_with_one_new_sku_are_created_once() {
    let rig = rig().await;
    let new = skus("NEW", 2);
    for sku in &new {
        rig.local_product(sku);
    }
    rig.host.put_product(CanonicalProduct {
        local_id: "P-twin".into(),
        sku: Some(new[0].clone()),
        name: "A twin".into(),
        ..CanonicalProduct::default()
    });
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(
        report.failed, 1,
        "the second product with the SKU: {report:?}"
    );
    assert_eq!(rig.mock.count("product_import"), 1);
    assert_eq!(rig.sku_reads(), 1, "read-back only");
    rig.assert_linked_once(&new).await;
}
