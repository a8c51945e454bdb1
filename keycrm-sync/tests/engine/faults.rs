//! Faults: KeyCRM failing a share of requests or losing create answers; the engine retries until
//! both sides agree, creating nothing twice.

use std::sync::atomic::Ordering;
use std::time::Duration;

use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{self, CanonicalOrder, Mappings};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{MemoryStore, Store, SyncState};

use crate::support::{
    Skew, assert_orders_agree, config, impatient_client, lossy_simulator, mappings, order,
    orders_by_uuid, remote_order, writes,
};

/// Whether the host and KeyCRM hold the same orders with the same fields (no panics: for
/// polling).
async fn orders_agree<S: Store>(mock: &KeyCrmMock, host: &MemoryHost, store: &S) -> bool {
    let m = mappings();
    let host_orders = host.orders();
    if host_orders.len() != mock.crm().order_ids().len() {
        return false;
    }
    for order in &host_orders {
        let mapping = store
            .get_mapping(EntityKind::Order, &order.local_id)
            .await
            .unwrap();
        let Some(id) = mapping.and_then(|m| m.remote_id) else {
            return false;
        };
        if canonical::order_fields_from_local(order, &m).ok() != Some(remote_order(mock, id)) {
            return false;
        }
    }
    true
}

/// Orders change on both sides while KeyCRM fails a `share` of requests with `status` (a
/// seeded choice) and, when `lose_creates`, answers some creates too late: the engine goes
/// on retrying (bounded) until both sides agree, creating nothing twice.
async fn converges_under_faults(share: f64, status: u16, seed: u64, lose_creates: bool) {
    let mock = lossy_simulator(Duration::from_millis(600)).await;
    let host = MemoryHost::new(mappings());
    let skew = Skew::default();
    let mut cfg = config();
    cfg.retry_attempts = 100;
    let engine = SyncEngine::builder()
        .client(impatient_client(&mock))
        .store(MemoryStore::new())
        .host(host.clone())
        .config(cfg)
        .outbox_clock(skew.clock())
        .build()
        .unwrap();
    for n in 1..=100 {
        host.put_order(order(n));
    }
    mock.faults().fail_share(share, status, seed);
    if lose_creates {
        // A fifth of the creates that succeed have their answer lost as well.
        mock.faults().lose_create_share(0.2, seed + 1);
    }
    let mut runs = 0;
    let mut converged = false;
    let mut failed_runs = 0;
    let mut shipped = Vec::new();
    while runs < 30 {
        // A run may stop halfway (a read failed after the client's retries): the next one
        // goes on from the durable state.
        if engine.run_once().await.is_err() {
            failed_runs += 1;
        }
        runs += 1;
        skew.pass_backoff();
        if runs == 3 {
            // Both sides change while the faults go on.
            for n in 1..=20 {
                host.edit_order(&format!("WMS-{n}"), |o| {
                    o.status = Some("approved".into());
                    o.comment = Some(format!("коментар {n}"));
                });
            }
            for n in 101..=110 {
                host.put_order(order(n));
            }
            let store = engine.store();
            for n in 41..=50 {
                if let Some(id) = store
                    .get_mapping(EntityKind::Order, &format!("WMS-{n}"))
                    .await
                    .unwrap()
                    .and_then(|m| m.remote_id)
                {
                    mock.crm().set_order_status(id, 4);
                    shipped.push(format!("WMS-{n}"));
                }
            }
        }
        if runs > 3
            && engine.status().await.unwrap().outbox_depth == 0
            && orders_agree(&mock, &host, engine.store()).await
        {
            converged = true;
            break;
        }
    }
    let served = mock.faults().served();
    mock.faults().clear();
    assert!(
        converged,
        "not converged after {runs} runs: {:?}",
        engine.status().await.unwrap()
    );
    assert!(served > 5, "only {served} faults served");
    let uuids = orders_by_uuid(&mock);
    assert_eq!(uuids.len(), 110);
    for n in 1..=110 {
        assert_eq!(uuids[&format!("WMS-{n}")].len(), 1, "WMS-{n} once");
    }
    assert_orders_agree(&mock, &host, engine.store()).await;
    for n in 1..=20 {
        let o = host.order(&format!("WMS-{n}")).unwrap();
        assert_eq!(o.status.as_deref(), Some("approved"));
        assert_eq!(o.comment, Some(format!("коментар {n}")));
    }
    assert!(!shipped.is_empty());
    for local_id in &shipped {
        let o = host.order(local_id).unwrap();
        assert_eq!(o.status.as_deref(), Some("shipped"), "{local_id}");
    }
    let status = engine.status().await.unwrap();
    assert_eq!(status.dead_letters, 0);
    assert!(
        engine
            .store()
            .list_mappings(EntityKind::Order, None)
            .await
            .unwrap()
            .iter()
            .all(|m| m.state == SyncState::Synced)
    );
    eprintln!("converged after {runs} runs ({failed_runs} stopped early), {served} faults");
    mock.clear_log();
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(writes(&mock), 0, "converged: {:?}", mock.requests());
}

#[tokio::test]
async fn converges_when_a_fifth_of_requests_get_503() {
    converges_under_faults(0.2, 503, 7, false).await;
}

#[tokio::test]
async fn converges_when_a_fifth_of_requests_get_429() {
    converges_under_faults(0.2, 429, 11, false).await;
}

#[tokio::test]
async fn converges_when_create_responses_are_lost_and_a_fifth_fail() {
    converges_under_faults(0.2, 502, 5, true).await;
}

/// A host that does not implement `find_local`: it cannot tell the engine which local record a
/// KeyCRM record stands for.
#[derive(Clone)]
struct PlainHost(MemoryHost);

impl keycrm_sync::host::Host for PlainHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<keycrm_sync::host::LocalChanges, keycrm_sync::host::HostError> {
        self.0.changes_since(kind, cursor).await
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<keycrm_sync::model::Snapshot>, keycrm_sync::host::HostError> {
        self.0.load(kind, local_id).await
    }

    async fn apply(
        &self,
        kind: EntityKind,
        change: keycrm_sync::host::RemoteChange,
    ) -> Result<keycrm_sync::host::Applied, keycrm_sync::host::HostError> {
        self.0.apply(kind, change).await
    }
}

#[tokio::test]
async fn a_lost_create_is_found_again_without_the_hosts_help() {
    use keycrm_sync::host::Host as _;
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let config = config();
    let memory = MemoryHost::new(Mappings::from_config(&config));
    let skew = Skew::default();
    let engine = SyncEngine::builder()
        .client(impatient_client(&mock))
        .store(MemoryStore::new())
        .host(PlainHost(memory.clone()))
        .config(config)
        .outbox_clock(skew.clock())
        .build()
        .unwrap();
    for n in 1..=3 {
        // Host ids differ from the numbers KeyCRM knows the orders by.
        memory.put_order(CanonicalOrder {
            local_id: format!("local-{n}"),
            ..order(n)
        });
    }
    assert_eq!(
        memory
            .find_local(EntityKind::Order, Default::default())
            .await
            .unwrap(),
        None
    );
    mock.faults().lose_next_creates(1);
    engine.run_once().await.unwrap();
    for _ in 0..3 {
        skew.0.fetch_add(3600, Ordering::Relaxed);
        engine.run_once().await.unwrap();
    }
    let numbers: Vec<String> = mock
        .crm()
        .order_ids()
        .into_iter()
        .filter_map(|id| mock.crm().order(id))
        .filter_map(|o| o["source_uuid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(numbers.len(), 3, "created once each: {numbers:?}");
    assert_eq!(memory.orders().len(), 3, "no duplicate local records");
    let mappings = engine
        .store()
        .list_mappings(EntityKind::Order, None)
        .await
        .unwrap();
    assert_eq!(mappings.len(), 3);
    assert!(
        mappings
            .iter()
            .all(|m| m.state == SyncState::Synced && m.remote_id.is_some()),
        "{mappings:?}"
    );
}
