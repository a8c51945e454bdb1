//! Exact request counts per scenario, read from the simulator's request log (counts, never
//! timings): the engine spends KeyCRM's quota (60 requests a minute) as KeyCRM's batch limits
//! allow, and never creates a record twice to save one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use keycrm_api::clock::{Clock, VirtualClock};
use keycrm_api::mock::{KeyCrmMock, Quota, RecordedRequest};
use keycrm_api::{Client, Decimal, Paginate, types};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{
    CanonicalBuyer, CanonicalContact, CanonicalLine, CanonicalOrder, Mappings,
};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{MemoryStore, Store};

fn config() -> SyncConfig {
    SyncConfig {
        api_key: Secret::new("test"),
        source_id: Some(1),
        status_ids: BTreeMap::from([
            ("new".to_string(), 1),
            ("approved".to_string(), 2),
            ("shipped".to_string(), 4),
        ]),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1)]),
        ..SyncConfig::default()
    }
}

struct Rig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: SyncEngine<MemoryStore, MemoryHost>,
    skew: Arc<AtomicI64>,
    /// The time of KeyCRM (the simulator) and of the engine (its client) alike.
    clock: Arc<VirtualClock>,
}

async fn rig() -> Rig {
    rig_with(config()).await
}

/// A simulator and an engine on one virtual clock: waits (retry backoff) are instant, and
/// time moves between runs only when the test says so.
async fn rig_with(config: SyncConfig) -> Rig {
    let clock = Arc::new(VirtualClock::new());
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .lost_response_delay(Duration::from_secs(2))
        .clock(clock.clone())
        .start()
        .await;
    let host = MemoryHost::new(Mappings::from_config(&config));
    let skew = Arc::new(AtomicI64::new(0));
    let offset = skew.clone();
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .clock(clock.clone())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let outbox_time = clock.clone();
    let engine = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .outbox_clock(move || {
            DateTime::<Utc>::from(outbox_time.wall_time())
                + chrono::Duration::seconds(offset.load(Ordering::Relaxed))
        })
        .build()
        .unwrap();
    Rig {
        mock,
        host,
        engine,
        skew,
        clock,
    }
}

impl Rig {
    fn client(&self) -> &Client {
        self.engine.client()
    }

    /// The time now, on the shared clock.
    fn now(&self) -> DateTime<Utc> {
        self.clock.wall_time().into()
    }

    /// Time passes between runs, as it does between a deployment's runs.
    fn wait(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Past every backoff the engine uses.
    fn pass_backoff(&self) {
        self.skew.fetch_add(2 * 3600, Ordering::Relaxed);
    }

    /// `GET /buyer` requests filtered by `filter[<key>]`.
    fn buyer_lists_by(&self, key: &str) -> usize {
        self.mock
            .requests()
            .iter()
            .filter(|r| r.operation == Some("buyer_list") && filters_by(r, key))
            .count()
    }

    async fn remote_buyers(&self) -> Vec<types::Buyer> {
        self.client().buyer_list().collect_all().await.unwrap()
    }

    async fn remote_id(&self, local_id: &str) -> Option<i64> {
        self.engine
            .store()
            .get_mapping(EntityKind::Buyer, local_id)
            .await
            .unwrap()
            .and_then(|m| m.remote_id)
    }
}

fn filters_by(r: &RecordedRequest, key: &str) -> bool {
    r.query.as_deref().is_some_and(|q| {
        q.contains(&format!("filter[{key}]")) || q.contains(&format!("filter%5B{key}%5D"))
    })
}

fn buyer(
    local_id: String,
    name: String,
    phone: Option<String>,
    email: Option<String>,
) -> CanonicalBuyer {
    CanonicalBuyer {
        local_id,
        name,
        phones: phone.into_iter().collect(),
        emails: email.into_iter().collect(),
        ..CanonicalBuyer::default()
    }
}

async fn create_remote(
    client: &Client,
    name: &str,
    phone: Option<&str>,
    email: Option<&str>,
) -> i64 {
    let body: types::BuyerCreate = types::BuyerCreate::builder()
        .full_name(name.to_string())
        .phone(phone.map(str::to_string).into_iter().collect::<Vec<_>>())
        .email(email.map(str::to_string).into_iter().collect::<Vec<_>>())
        .try_into()
        .unwrap();
    let created = client.buyer_create().body(body).send().await.unwrap();
    created.into_inner().id.unwrap()
}

/// 100 buyers with a phone (written the national way, `067 …`), 10 with only an e-mail,
/// one with neither; a fifth of them already in KeyCRM (in E.164). The engine links those,
/// imports the rest 50 at a time and reads the new ids back by the same comma filters.
#[tokio::test]
async fn new_buyers_cost_a_look_up_an_import_and_a_read_back_per_fifty() {
    let rig = rig_with(SyncConfig {
        overlap_secs: 0,
        ..config()
    })
    .await;
    let mut existing = Vec::new();
    for i in 0..20 {
        let id = create_remote(
            rig.client(),
            &format!("Клієнт {i}"),
            Some(&format!("+38067{i:07}")),
            None,
        )
        .await;
        existing.push(id);
    }
    for i in 0..2 {
        create_remote(
            rig.client(),
            &format!("Пошта {i}"),
            None,
            Some(&format!("mail{i}@example.com")),
        )
        .await;
    }
    // KeyCRM's change feed already passed these: only the push's look-up can find them.
    rig.engine
        .store()
        .set_cursor(
            EntityKind::Buyer,
            "remote",
            &(rig.now() + chrono::Duration::seconds(2)).to_rfc3339(),
            rig.now(),
        )
        .await
        .unwrap();
    for i in 0..100 {
        let phone = format!(
            "067 {:03} {:02} {:02}",
            i / 10_000,
            (i / 100) % 100,
            i % 100
        );
        rig.host.put_buyer(buyer(
            format!("C-{i}"),
            format!("Клієнт {i}"),
            Some(phone),
            None,
        ));
    }
    for i in 0..10 {
        rig.host.put_buyer(buyer(
            format!("E-{i}"),
            format!("Пошта {i}"),
            None,
            Some(format!(" Mail{i}@Example.com")),
        ));
    }
    rig.host
        .put_buyer(buyer("N-1".into(), "Без контактів".into(), None, None));

    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");

    // Look-ups: 100 phones in 2 lists, the 10 e-mails in 1; read-backs: 2 by phone, 1 by e-mail.
    assert_eq!(rig.buyer_lists_by("buyer_phone"), 2 + 2);
    assert_eq!(rig.buyer_lists_by("buyer_email"), 1 + 1);
    assert_eq!(
        rig.mock.count("buyer_import"),
        2 + 1,
        "80 by phone, 8 by e-mail"
    );
    assert_eq!(
        rig.mock.count("buyer_create"),
        1,
        "the buyer without contacts alone"
    );
    assert_eq!(
        rig.mock.count("buyer_update"),
        0,
        "the linked ones agree already"
    );

    let remote = rig.remote_buyers().await;
    assert_eq!(remote.len(), 22 + 80 + 8 + 1, "nothing created twice");
    let mut ids = BTreeSet::new();
    for local in (0..100)
        .map(|i| format!("C-{i}"))
        .chain((0..10).map(|i| format!("E-{i}")))
        .chain(["N-1".to_string()])
    {
        let id = rig
            .remote_id(&local)
            .await
            .unwrap_or_else(|| panic!("{local} linked"));
        assert!(ids.insert(id), "{local} has a buyer of its own");
    }
    // The pre-existing ones are linked, not copied; the new ones carry E.164 phones.
    let by_id: BTreeMap<i64, &types::Buyer> = remote.iter().map(|b| (b.id.unwrap(), b)).collect();
    assert_eq!(
        rig.remote_id("C-3").await,
        Some(existing[3]),
        "C-3 is linked to the buyer KeyCRM had"
    );
    let new = by_id[&rig.remote_id("C-42").await.unwrap()];
    assert_eq!(
        serde_json::to_value(&new.phone).unwrap(),
        serde_json::json!(["+380670000042"])
    );

    // Nothing changed since: the push sends nothing.
    rig.mock.clear_log();
    let again = rig.engine.run_once().await.unwrap();
    assert_eq!(again.failed, 0, "{again:?}");
    assert_eq!(
        rig.mock.count("buyer_import") + rig.mock.count("buyer_create"),
        0
    );
    assert_eq!(
        rig.buyer_lists_by("buyer_phone") + rig.buyer_lists_by("buyer_email"),
        0
    );
}

/// An import whose answer is lost: KeyCRM created the 50 buyers, the engine does not know
/// their ids. The next attempt finds them by phone and links them; nothing is imported twice.
#[tokio::test]
async fn a_lost_import_answer_duplicates_nothing() {
    let rig = rig().await;
    for i in 0..60 {
        rig.host.put_buyer(buyer(
            format!("C-{i}"),
            format!("Клієнт {i}"),
            Some(format!("+38093{i:07}")),
            None,
        ));
    }
    rig.mock.faults().lose_next_creates(1);
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(
        first.failed, 50,
        "the first import's answer was lost: {first:?}"
    );
    assert_eq!(rig.mock.count("buyer_import"), 2);
    // Let the held-back answer go.
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..2 {
        rig.pass_backoff();
        let report = rig.engine.run_once().await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
    }
    assert_eq!(rig.mock.count("buyer_import"), 2, "no import sent again");
    assert_eq!(rig.mock.count("buyer_create"), 0);
    let remote = rig.remote_buyers().await;
    assert_eq!(remote.len(), 60, "created once each");
    let mut ids = BTreeSet::new();
    for i in 0..60 {
        let id = rig.remote_id(&format!("C-{i}")).await.expect("linked");
        assert!(ids.insert(id));
    }
}

/// Two host records with the same phone are one KeyCRM buyer at most: the second one waits
/// for the first to be created and then meets it (a duplicate link is refused, not created).
/// A batch of one or two is a plain `POST /buyer` each, whose answer carries the id (an
/// import would cost two requests too: itself and its read-back).
#[tokio::test]
async fn two_new_records_with_one_phone_create_one_buyer() {
    let rig = rig().await;
    for n in 1..=2 {
        rig.host.put_buyer(buyer(
            format!("C-{n}"),
            format!("Клієнт {n}"),
            Some("+380501112233".into()),
            None,
        ));
    }
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        rig.mock.count("buyer_import"),
        0,
        "one buyer is one POST /buyer"
    );
    assert_eq!(rig.mock.count("buyer_create"), 1);
    assert_eq!(rig.remote_buyers().await.len(), 1, "one buyer per phone");
    assert!(rig.remote_id("C-1").await.is_some());
}

/// A buyer with neither phone nor e-mail whose create answer is lost is looked for among
/// the buyers created since the attempt, and not created a second time.
#[tokio::test]
async fn a_buyer_without_contacts_is_created_once_even_when_the_answer_is_lost() {
    let rig = rig().await;
    rig.host
        .put_buyer(buyer("N-1".into(), "Без контактів".into(), None, None));
    rig.mock.faults().lose_next_creates(1);
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 1, "{first:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    rig.pass_backoff();
    rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("buyer_create"), 1, "never sent twice");
    assert_eq!(rig.remote_buyers().await.len(), 1);
}

fn order(i: usize) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("WMS-{i}"),
        number: Some(format!("WMS-{i}")),
        status: Some("new".into()),
        buyer: CanonicalContact {
            name: Some(format!("Покупець {i}")),
            phone: Some(format!("+38050{i:07}")),
            email: None,
        },
        lines: vec![CanonicalLine {
            sku: format!("ONE-OFF-{i}"),
            name: "Чай".into(),
            quantity: Decimal::from(1),
            price: Decimal::from(100),
        }],
        ..CanonicalOrder::default()
    }
}

/// Orders the engine created and linked, with their KeyCRM ids (host id -> remote id).
async fn pushed_orders(rig: &Rig, count: usize) -> Vec<(String, i64)> {
    for i in 0..count {
        rig.host.put_order(order(i));
    }
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let mut out = Vec::new();
    for i in 0..count {
        let local = format!("WMS-{i}");
        let id = rig
            .engine
            .store()
            .get_mapping(EntityKind::Order, &local)
            .await
            .unwrap()
            .and_then(|m| m.remote_id)
            .expect("linked");
        out.push((local, id));
    }
    out
}

/// A status change and a comment on 30 orders the engine wrote: one `PUT /order/{id}` each,
/// carrying only the changed fields, and no read first (the last reconciliation proves
/// KeyCRM's copy equals the base).
#[tokio::test]
async fn order_updates_send_one_put_each_without_a_read_first() {
    let rig = rig().await;
    let orders = pushed_orders(&rig, 30).await;
    // A run that reconciles (the engine's own writes come back): the bases are current.
    rig.engine.run_once().await.unwrap();
    for (local, _) in &orders {
        rig.host.edit_order(local, |o| {
            o.status = Some("approved".into());
            o.comment = Some("пакувати".into());
        });
    }
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(rig.mock.count("order_update"), 30);
    assert_eq!(rig.mock.count("order_get"), 0, "no read before an update");
    for (_, id) in &orders {
        let remote = rig.mock.crm().order(*id).unwrap();
        assert_eq!(remote["status_id"], serde_json::json!(2));
        assert_eq!(remote["manager_comment"], serde_json::json!("пакувати"));
    }
}

/// A manager moves 120 orders to "shipped": the events' statuses reach the host before any
/// request, and the orders are read in pages of 50 (`updated_between` and the events'
/// statuses), not one `GET /order/{id}` each.
#[tokio::test]
async fn a_webhook_burst_costs_pages_not_one_read_each() {
    let rig = rig().await;
    let orders = pushed_orders(&rig, 120).await;
    rig.engine.run_once().await.unwrap();
    for (_, id) in &orders {
        rig.mock.crm().set_order_status(*id, 4);
    }
    rig.mock.clear_log();
    for (_, id) in &orders {
        let context = rig.mock.crm().order(*id).unwrap();
        let body = serde_json::json!({"event": "order.change_order_status", "context": context});
        assert!(rig.engine.ingest_webhook(&body).await.unwrap());
    }
    let report = rig.engine.apply_inbox().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(rig.mock.count("order_get"), 0, "no read per event");
    assert_eq!(rig.mock.count("order_list"), 3, "120 orders in pages of 50");
    assert_eq!(rig.mock.request_count(), 3);
    for (local, _) in &orders {
        assert_eq!(
            rig.host.order(local).unwrap().status.as_deref(),
            Some("shipped"),
            "{local}"
        );
    }
}

/// One event is one `GET /order/{id}`: no list read is cheaper.
#[tokio::test]
async fn a_single_webhook_costs_one_read() {
    let rig = rig().await;
    let orders = pushed_orders(&rig, 3).await;
    rig.engine.run_once().await.unwrap();
    let (local, id) = &orders[1];
    rig.mock.crm().set_order_status(*id, 4);
    rig.mock.clear_log();
    let context = rig.mock.crm().order(*id).unwrap();
    let body = serde_json::json!({"event": "order.change_order_status", "context": context});
    rig.engine.ingest_webhook(&body).await.unwrap();
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(rig.mock.request_count(), 1);
    assert_eq!(rig.mock.count("order_get"), 1);
    assert_eq!(
        rig.host.order(local).unwrap().status.as_deref(),
        Some("shipped")
    );
}

/// The remote feeds an incremental run reads: orders by `updated_between` and by
/// `created_between`, buyers by `updated_between`.
const FEEDS: usize = 3;

/// Seconds between runs in the tests below: more than KeyCRM's whole second plus the
/// overlap (2 s by default), far less than the 120 s overlap the cursor once had.
const GAP: u64 = 5;

/// `order_list` requests by the filter they carry.
fn order_lists_by(rig: &Rig, key: &str) -> usize {
    rig.mock
        .requests()
        .iter()
        .filter(|r| r.operation == Some("order_list") && filters_by(r, key))
        .count()
}

/// The engine's own writes (120 creates, then 120 status updates, runs `GAP` seconds apart)
/// are read back once, by the run after each: one page of 50 per written record on the feed
/// that has them, one request on the others; an idle run after that costs one request per
/// incremental feed.
///
/// With the old cursor (the pass start minus a 120 s overlap) every run here would read all
/// 120 orders and buyers again on every feed: 9 requests, not 5 and 3.
#[tokio::test]
async fn an_idle_run_right_after_the_engines_writes_costs_one_request_per_feed() {
    let rig = rig().await;
    let orders = pushed_orders(&rig, 120).await;
    assert_eq!(rig.mock.count("order_import"), 3, "120 creates");
    for (local, _) in &orders {
        rig.host
            .edit_order(local, |o| o.status = Some("approved".into()));
    }
    rig.wait(GAP);
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.pushed, 120, "{report:?}");
    // The creates come back: 120 orders on the updated and the created feed, and the 120
    // buyers KeyCRM made for them.
    assert_eq!(order_lists_by(&rig, "updated_between"), 3);
    assert_eq!(order_lists_by(&rig, "created_between"), 3);
    assert_eq!(rig.mock.count("buyer_list"), 3);

    rig.wait(GAP);
    rig.mock.clear_log();
    let back = rig.engine.run_once().await.unwrap();
    // The 120 status updates, once: 3 pages of the updated feed; nothing was created.
    assert_eq!(
        order_lists_by(&rig, "updated_between"),
        3,
        "{:?}",
        rig.mock.requests()
    );
    assert_eq!(order_lists_by(&rig, "created_between"), 1);
    assert_eq!(rig.mock.count("buyer_list"), 1);
    assert_eq!(rig.mock.request_count(), 3 + (FEEDS - 1));
    assert_eq!(
        (back.pushed, back.applied, back.failed),
        (0, 0, 0),
        "its own writes change nothing: {back:?}"
    );

    rig.wait(GAP);
    rig.mock.clear_log();
    let idle = rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.request_count(), FEEDS, "{:?}", rig.mock.requests());
    assert_eq!(rig.mock.count("order_list"), 2);
    assert_eq!(rig.mock.count("buyer_list"), 1);
    assert_eq!(
        (idle.pushed, idle.applied, idle.failed),
        (0, 0, 0),
        "{idle:?}"
    );

    rig.wait(GAP);
    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.request_count(), FEEDS, "and every idle run after");
}

/// A manager's change in KeyCRM right after the engine's own write to the same order (in the
/// same second, as KeyCRM stamps them, and after a run already read that write back) is
/// still pulled by the next run; and only that second is read again, not the minutes before.
///
/// With the old cursor (the pass start minus a 120 s overlap) the run that pulls the change
/// would also read the 60 orders created 10 s before and their buyers again: 6 requests, not 3.
#[tokio::test]
async fn a_keycrm_change_right_after_the_engines_write_is_pulled() {
    let rig = rig().await;
    let orders = pushed_orders(&rig, 60).await;
    let (local, id) = &orders[1];
    rig.host
        .edit_order(local, |o| o.status = Some("approved".into()));
    rig.wait(GAP);
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.pushed, 1, "{report:?}");
    assert_eq!(
        rig.mock.crm().order(*id).unwrap()["status_id"],
        serde_json::json!(2)
    );
    // A run in the same second (an operator's "sync now") reads the write back...
    rig.mock.clear_log();
    let again = rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.request_count(), FEEDS);
    assert_eq!((again.applied, again.pushed), (0, 0), "{again:?}");
    // ...and a manager changes the order later in that second. No webhook: only the
    // reconciliation can find it.
    rig.mock.crm().set_order_status(*id, 4);
    rig.wait(GAP);
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(
        rig.host.order(local).unwrap().status.as_deref(),
        Some("shipped")
    );
    assert_eq!(
        rig.mock.request_count(),
        FEEDS,
        "the change is on the feeds' pages: {:?}",
        rig.mock.requests()
    );

    rig.wait(GAP);
    rig.mock.clear_log();
    let idle = rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.request_count(), FEEDS);
    assert_eq!((idle.applied, idle.pushed), (0, 0), "{idle:?}");
}

/// The simulator stamps `updated_at` (and `created_at`) by the injected clock, and its
/// `updated_between` filter selects by those stamps.
#[tokio::test]
async fn the_simulators_stamps_follow_the_injected_clock() {
    let rig = rig().await;
    let orders = pushed_orders(&rig, 1).await;
    let (_, id) = orders[0];
    let created = rig.now();
    let stamp = |field: &str| -> DateTime<Utc> {
        rig.mock.crm().order(id).unwrap()[field]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(stamp("created_at").timestamp(), created.timestamp());
    assert_eq!(stamp("updated_at").timestamp(), created.timestamp());

    rig.wait(3600);
    rig.mock.crm().set_order_status(id, 4);
    let changed = rig.now();
    assert_eq!(changed - created, chrono::Duration::hours(1));
    assert_eq!(stamp("updated_at").timestamp(), changed.timestamp());
    assert_eq!(stamp("created_at").timestamp(), created.timestamp());

    let between = |from: DateTime<Utc>, to: DateTime<Utc>| {
        keycrm_api::filter::between(from.into(), to.into())
    };
    let client = rig.client();
    let list = |window: String| async move {
        client
            .order_list()
            .filter_updated_between(window)
            .collect_all()
            .await
            .unwrap()
            .len()
    };
    let minute = chrono::Duration::minutes(1);
    assert_eq!(list(between(created - minute, created + minute)).await, 0);
    assert_eq!(list(between(changed - minute, changed + minute)).await, 1);
}
