//! The catalogue's and stock's full passes run on their own schedule
//! (`catalogue_pass_interval_secs`, an hour by default; `stock_pass_interval_secs`, a day),
//! since KeyCRM offers no `updated_between` for products, offers or stock levels. Exact request
//! counts from the simulator's request log: a run that is due nothing reads only the three
//! incremental feeds (orders updated, orders created, buyers updated).
//!
//! Time passes without sleeping: the store keeps each kind's last full pass time (cursor
//! `full`, RFC 3339), and the tests move it back as an hour or a day passing would.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keycrm_api::clock::VirtualClock;
use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_api::{Decimal, Paginate, types};
use keycrm_sync::SyncEngine;
use keycrm_sync::config::SyncConfig;
use keycrm_sync::engine::{PassOutcome, RunReport};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{SqliteStore, Store};

use support::{
    Rig, SCHEDULED_KINDS, TempDb, age_full_passes, config, mappings, rig_with, seed, unpaced_client,
};

/// KeyCRM's page size for the engine's list reads.
const PAGE: usize = 50;

/// Products seeded in the simulator (each with one to three offers): two pages of products.
const PRODUCTS: usize = 70;

const CATALOGUE: [EntityKind; 2] = [EntityKind::Product, EntityKind::Offer];
const STOCK: [EntityKind; 1] = [EntityKind::Stock];

/// A run that is due no full pass: `GET /order` by `updated_between` and by
/// `created_between`, `GET /buyer` by `updated_between`.
const FEEDS: [(&str, usize); 2] = [("order_list", 2), ("buyer_list", 1)];

/// The requests of the simulator's log, by operation.
fn operations(mock: &KeyCrmMock) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for r in mock.requests() {
        *out.entry(r.operation.unwrap_or("unknown")).or_default() += 1;
    }
    out
}

/// Offers the simulator was seeded with.
fn offers(mock: &KeyCrmMock) -> usize {
    mock.seeded().expect("seeded").offers.len()
}

/// The requests of a run that reads the three feeds and `full` whole.
fn expected(mock: &KeyCrmMock, full: &[EntityKind]) -> BTreeMap<&'static str, usize> {
    let mut out: BTreeMap<&'static str, usize> = FEEDS.into();
    for kind in full {
        let (operation, records) = match kind {
            EntityKind::Product => ("product_list", PRODUCTS),
            EntityKind::Offer => ("offer_list", offers(mock)),
            EntityKind::Stock => ("offer_stock_list", offers(mock)),
            other => panic!("{other:?} is not read on a schedule"),
        };
        out.insert(operation, records.div_ceil(PAGE));
    }
    out
}

/// The outcomes a run reports for complete passes of `kinds`.
fn complete(kinds: &[EntityKind]) -> BTreeMap<EntityKind, PassOutcome> {
    kinds
        .iter()
        .map(|kind| (*kind, PassOutcome::Complete))
        .collect()
}

/// A stored full pass time.
async fn stored<S: Store>(store: &S, kind: EntityKind, name: &str) -> Option<DateTime<Utc>> {
    store.get_cursor(kind, name).await.unwrap().map(|at| {
        DateTime::parse_from_rfc3339(&at)
            .unwrap()
            .with_timezone(&Utc)
    })
}

async fn seeded_rig() -> Rig {
    rig_with(
        KeyCrmMock::builder().seed(seed(PRODUCTS, 0, 0)),
        config(),
        |b| b,
    )
    .await
}

/// One run from an empty request log: its report and its requests by operation.
async fn run<S: Store>(
    mock: &KeyCrmMock,
    engine: &SyncEngine<S, MemoryHost>,
) -> (RunReport, BTreeMap<&'static str, usize>) {
    mock.clear_log();
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.requests as usize, mock.request_count(), "{report:?}");
    (report, operations(mock))
}

/// A run that is due nothing: three requests, no full pass.
async fn assert_idle<S: Store>(mock: &KeyCrmMock, engine: &SyncEngine<S, MemoryHost>) {
    let (report, requests) = run(mock, engine).await;
    assert_eq!(requests, expected(mock, &[]), "{report:?}");
    assert_eq!(report.requests, 3);
    assert!(!report.full_pass, "{report:?}");
    assert!(report.full_passes.is_empty(), "{report:?}");
}

#[tokio::test]
async fn the_first_run_reads_the_catalogue_and_stock_whole_and_the_next_only_the_feeds() {
    let rig = seeded_rig().await;
    let store = rig.engine.store();
    assert!(
        offers(&rig.mock) > PRODUCTS,
        "some products have several offers"
    );

    let (first, requests) = run(&rig.mock, &rig.engine).await;
    let mut want = expected(&rig.mock, &SCHEDULED_KINDS);
    // Order status ranks, read once by each engine; orders without a cursor are read by one
    // unfiltered list (there is no `created_between` pass before the first window).
    want.insert("order_status_list", 1);
    want.insert("order_list", 1);
    assert_eq!(requests, want, "{first:?}");
    assert!(first.full_pass);
    assert_eq!(first.full_passes, complete(&SCHEDULED_KINDS));
    let linked = store
        .list_mappings(EntityKind::Product, None)
        .await
        .unwrap();
    assert_eq!(linked.len(), PRODUCTS);
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(
        json["full_passes"],
        serde_json::json!({"product": "complete", "offer": "complete", "stock": "complete"})
    );
    let started = first.started_at.unwrap();
    for kind in SCHEDULED_KINDS {
        let at = stored(store, kind, "full").await.expect("a full pass time");
        assert!(at >= started && at <= Utc::now(), "{kind:?}: {at}");
        assert_eq!(stored(store, kind, "full_incomplete").await, None);
    }
    for kind in [EntityKind::Order, EntityKind::Buyer] {
        assert_eq!(stored(store, kind, "full").await, None, "{kind:?}");
    }

    assert_idle(&rig.mock, &rig.engine).await;
    assert_idle(&rig.mock, &rig.engine).await;
}

#[tokio::test]
async fn the_catalogue_is_read_again_after_an_hour_and_stock_after_a_day() {
    let rig = seeded_rig().await;
    let store = rig.engine.store();
    let (first, _) = run(&rig.mock, &rig.engine).await;
    assert_eq!(first.full_passes, complete(&SCHEDULED_KINDS));

    // 59 minutes: nothing is due yet.
    age_full_passes(store, &CATALOGUE, chrono::Duration::minutes(59)).await;
    assert_idle(&rig.mock, &rig.engine).await;

    // Past the hour: the catalogue, and only the catalogue, is read whole.
    age_full_passes(store, &CATALOGUE, chrono::Duration::minutes(2)).await;
    let stock_before = stored(store, EntityKind::Stock, "full").await;
    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(requests, expected(&rig.mock, &CATALOGUE), "{report:?}");
    assert!(report.full_pass);
    assert_eq!(report.full_passes, complete(&CATALOGUE));
    for kind in CATALOGUE {
        let at = stored(store, kind, "full").await.unwrap();
        assert!(
            at >= report.started_at.unwrap(),
            "{kind:?} moved to this pass"
        );
    }
    assert_eq!(stored(store, EntityKind::Stock, "full").await, stock_before);
    assert_idle(&rig.mock, &rig.engine).await;

    // 23 hours: stock is not due yet (nor the catalogue, whose last pass is recent).
    age_full_passes(store, &STOCK, chrono::Duration::hours(23)).await;
    assert_idle(&rig.mock, &rig.engine).await;

    // Past the day: stock, and only stock, is read whole.
    age_full_passes(store, &STOCK, chrono::Duration::minutes(61)).await;
    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(requests, expected(&rig.mock, &STOCK), "{report:?}");
    assert!(report.full_pass);
    assert_eq!(report.full_passes, complete(&STOCK));
    let at = stored(store, EntityKind::Stock, "full").await.unwrap();
    assert!(at >= report.started_at.unwrap());
    assert_idle(&rig.mock, &rig.engine).await;
}

#[tokio::test]
async fn the_intervals_are_configurable() {
    let config = SyncConfig {
        catalogue_pass_interval_secs: 600,
        stock_pass_interval_secs: 7200,
        ..config()
    };
    let rig = rig_with(
        KeyCrmMock::builder().seed(seed(PRODUCTS, 0, 0)),
        config,
        |b| b,
    )
    .await;
    let store = rig.engine.store();
    run(&rig.mock, &rig.engine).await;
    age_full_passes(store, &CATALOGUE, chrono::Duration::minutes(9)).await;
    age_full_passes(store, &STOCK, chrono::Duration::minutes(119)).await;
    assert_idle(&rig.mock, &rig.engine).await;
    age_full_passes(store, &CATALOGUE, chrono::Duration::minutes(2)).await;
    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(requests, expected(&rig.mock, &CATALOGUE));
    assert_eq!(report.full_passes, complete(&CATALOGUE));
    age_full_passes(store, &STOCK, chrono::Duration::minutes(2)).await;
    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(requests, expected(&rig.mock, &STOCK));
    assert_eq!(report.full_passes, complete(&STOCK));
}

#[tokio::test]
async fn a_restarted_engine_does_not_read_early_what_it_read_before() {
    let db = TempDb::new("schedule-restart");
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .seed(seed(PRODUCTS, 0, 0))
        .start()
        .await;
    let host = MemoryHost::new(mappings());
    let engine = || {
        SyncEngine::builder()
            .client(unpaced_client(&mock))
            .store(SqliteStore::open(&db.0).unwrap())
            .host(host.clone())
            .config(config())
            .build()
            .unwrap()
    };
    let first = engine();
    let (report, _) = run(&mock, &first).await;
    assert_eq!(report.full_passes, complete(&SCHEDULED_KINDS));
    let times: Vec<_> = {
        let mut out = Vec::new();
        for kind in SCHEDULED_KINDS {
            out.push(stored(first.store(), kind, "full").await.unwrap());
        }
        out
    };
    drop(first);

    let restarted = engine();
    let (report, requests) = run(&mock, &restarted).await;
    let mut want = expected(&mock, &[]);
    // The new engine reads the order status ranks once; nothing else is read again.
    want.insert("order_status_list", 1);
    assert_eq!(requests, want, "{report:?}");
    assert!(!report.full_pass);
    assert!(report.full_passes.is_empty());
    for (kind, at) in SCHEDULED_KINDS.into_iter().zip(times) {
        assert_eq!(stored(restarted.store(), kind, "full").await, Some(at));
    }
    assert_idle(&mock, &restarted).await;

    // The schedule goes on from the stored times.
    age_full_passes(restarted.store(), &CATALOGUE, chrono::Duration::minutes(61)).await;
    drop(restarted);
    let again = engine();
    mock.clear_log();
    let report = again.run_once().await.unwrap();
    let mut want = expected(&mock, &CATALOGUE);
    want.insert("order_status_list", 1);
    assert_eq!(operations(&mock), want, "{report:?}");
    assert_eq!(report.full_passes, complete(&CATALOGUE));
}

#[tokio::test]
async fn an_incomplete_pass_moves_no_time_and_is_tried_again_on_the_schedule() {
    let rig = seeded_rig().await;
    let store = rig.engine.store();
    run(&rig.mock, &rig.engine).await;
    let offers: Vec<types::Offer> = rig
        .engine
        .client()
        .offer_list()
        .collect_all()
        .await
        .unwrap();
    let host_level = |key: &str| rig.host.stock(key).map(|s| s.quantity);
    let before: Vec<_> = offers
        .iter()
        .map(|o| {
            let key = format!("main/{}", o.sku.as_deref().unwrap());
            let level = host_level(&key).expect("the first pass brought it");
            (key, level)
        })
        .collect();
    assert!(before.iter().any(|(_, level)| *level != Decimal::ZERO));
    // Every level of the main warehouse zeroed in KeyCRM: the mass-zeroing guard holds the
    // stock pass, which is then incomplete.
    for offer in &offers {
        rig.mock.crm().set_stock(offer.id.unwrap(), 1, 0);
    }
    age_full_passes(store, &STOCK, chrono::Duration::hours(25)).await;
    let complete_before = stored(store, EntityKind::Stock, "full").await.unwrap();

    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(requests, expected(&rig.mock, &STOCK), "{report:?}");
    assert!(report.full_pass);
    assert_eq!(
        report.full_passes,
        BTreeMap::from([(EntityKind::Stock, PassOutcome::Incomplete)])
    );
    for (key, quantity) in &before {
        assert_eq!(host_level(key), Some(*quantity), "{key} held, not zeroed");
    }
    assert_eq!(
        stored(store, EntityKind::Stock, "full").await,
        Some(complete_before),
        "an incomplete pass is no complete one"
    );
    let tried = stored(store, EntityKind::Stock, "full_incomplete")
        .await
        .expect("the try is noted");
    assert!(tried >= report.started_at.unwrap());

    // Not read whole again on every run: the next try is on the schedule.
    assert_idle(&rig.mock, &rig.engine).await;
    age_full_passes(store, &STOCK, chrono::Duration::hours(25)).await;
    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(requests, expected(&rig.mock, &STOCK), "{report:?}");
    assert_eq!(
        report.full_passes,
        BTreeMap::from([(EntityKind::Stock, PassOutcome::Incomplete)])
    );
    assert_eq!(
        stored(store, EntityKind::Stock, "full").await,
        Some(complete_before - chrono::Duration::hours(25))
    );

    // Once KeyCRM's levels are sound again, the next scheduled pass completes.
    for offer in &offers {
        rig.mock.crm().set_stock(offer.id.unwrap(), 1, 5);
    }
    age_full_passes(store, &STOCK, chrono::Duration::hours(25)).await;
    let (report, requests) = run(&rig.mock, &rig.engine).await;
    assert_eq!(
        requests.get("offer_stock_list"),
        expected(&rig.mock, &STOCK).get("offer_stock_list")
    );
    assert_eq!(report.full_passes, complete(&STOCK));
    let at = stored(store, EntityKind::Stock, "full").await.unwrap();
    assert!(at >= report.started_at.unwrap());
    for (key, _) in &before {
        assert_eq!(host_level(key), Some(Decimal::from(5)), "{key}");
    }
}

#[tokio::test]
async fn a_failed_pass_moves_no_time_and_the_next_run_tries_again() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .seed(seed(PRODUCTS, 0, 0))
        .start()
        .await;
    let host = MemoryHost::new(mappings());
    // No retries, and a virtual clock: KeyCRM's `Retry-After` is not waited for in real time.
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .max_retries(0)
        .clock(Arc::new(VirtualClock::new()))
        .build()
        .unwrap();
    let engine = SyncEngine::builder()
        .client(client)
        .store(keycrm_sync::store::MemoryStore::new())
        .host(host.clone())
        .config(config())
        .build()
        .unwrap();
    let store = engine.store();
    run(&mock, &engine).await;
    age_full_passes(store, &CATALOGUE, chrono::Duration::minutes(61)).await;
    let product_before = stored(store, EntityKind::Product, "full").await;

    // KeyCRM answers the three feeds and the first page of products, then refuses (429).
    mock.set_quota(Quota::new(4, Duration::from_secs(3600)));
    mock.clear_log();
    engine
        .run_once()
        .await
        .expect_err("the products' second page is refused");
    assert_eq!(mock.count("product_list"), 2, "{:?}", operations(&mock));
    assert_eq!(
        stored(store, EntityKind::Product, "full").await,
        product_before
    );
    assert_eq!(
        stored(store, EntityKind::Product, "full_incomplete").await,
        None
    );

    mock.set_quota(Quota::unlimited());
    let (report, requests) = run(&mock, &engine).await;
    assert_eq!(requests, expected(&mock, &CATALOGUE), "{report:?}");
    assert_eq!(report.full_passes, complete(&CATALOGUE));
    assert!(stored(store, EntityKind::Product, "full").await > product_before);
}

#[tokio::test]
async fn a_full_resync_reads_everything_and_counts_for_the_schedule() {
    let rig = seeded_rig().await;
    let store = rig.engine.store();
    run(&rig.mock, &rig.engine).await;
    rig.mock.clear_log();
    let report = rig.engine.full_resync().await.unwrap();
    assert!(report.full_pass);
    for kind in SCHEDULED_KINDS {
        assert_eq!(report.full_passes.get(&kind), Some(&PassOutcome::Complete));
        let at = stored(store, kind, "full").await.unwrap();
        assert!(at >= report.started_at.unwrap(), "{kind:?}");
    }
    let requests = operations(&rig.mock);
    for (operation, pages) in expected(&rig.mock, &SCHEDULED_KINDS) {
        if operation != "order_list" && operation != "buyer_list" {
            assert_eq!(requests.get(operation), Some(&pages), "{operation}");
        }
    }
    assert_idle(&rig.mock, &rig.engine).await;
}
