//! Alerts against the simulator on a virtual clock: each fires once per episode and resolves
//! once, to the event stream, the metrics and the notifiers (the built-in one POSTs JSON).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use keycrm_api::clock::VirtualClock;
use keycrm_api::mock::KeyCrmMock;
use keycrm_sync::alert::{AlertTransition, Notifier, NotifyFuture, WebhookNotifier};
use keycrm_sync::canonical::CanonicalOrder;
use keycrm_sync::config::SyncConfig;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::http::{HttpOptions, Service};
use keycrm_sync::store::MemoryStore;
use keycrm_sync::{RunPhase, SyncEngine, SyncEvent};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{config_with, engine_on, line, no_retry_client, simulator};

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(String, bool)>>>);

impl Notifier for Collect {
    fn notify<'a>(&'a self, t: &'a AlertTransition) -> NotifyFuture<'a> {
        Box::pin(async move {
            self.0
                .lock()
                .unwrap()
                .push((t.alert.kind.as_str().to_string(), t.firing));
        })
    }
}

fn order(n: u32, status: &str) -> CanonicalOrder {
    CanonicalOrder {
        status: Some(status.into()),
        lines: vec![line(format!("SKU-{n}"), "Чай", 1, "10")],
        ..support::order(n)
    }
}

struct Rig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: SyncEngine<MemoryStore, MemoryHost>,
    service: Service<MemoryStore, MemoryHost>,
    clock: Arc<VirtualClock>,
    notes: Collect,
    hook: MockServer,
}

async fn rig() -> Rig {
    let mock = simulator().await;
    let config = SyncConfig {
        retry_attempts: 1,
        ..config_with(&["new", "approved"], &[], &[])
    };
    let (host, engine) = engine_on(no_retry_client(&mock), MemoryStore::new(), config);
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&hook)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let notes = Collect::default();
    let mut options = HttpOptions::new("admin")
        .notifier(notes.clone())
        .notifier(WebhookNotifier::new(format!("{}/alerts", hook.uri())));
    options.clock = clock.clone();
    options.alert_interval = None;
    let service = Service::new(engine.clone(), options);
    Rig {
        mock,
        host,
        engine,
        service,
        clock,
        notes,
        hook,
    }
}

fn kinds(transitions: &[AlertTransition]) -> Vec<(&'static str, bool)> {
    transitions
        .iter()
        .map(|t| (t.alert.kind.as_str(), t.firing))
        .collect()
}

#[tokio::test]
async fn keycrm_unavailable_fires_once_per_outage_and_resolves_once() {
    let rig = rig().await;
    let mut events = Box::pin(rig.engine.subscribe());
    rig.host.put_order(order(1, "new"));
    rig.engine.run_once().await.unwrap();
    assert!(rig.service.evaluate_alerts().await.is_empty());

    // KeyCRM goes down while a change waits.
    rig.mock.faults().fail_next(100_000, 503);
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("approved".into()));
    let _ = rig.engine.run_once().await;
    assert!(rig.engine.status().await.unwrap().outbox_depth >= 1);
    rig.clock.advance(Duration::from_secs(60));
    assert!(
        rig.service.evaluate_alerts().await.is_empty(),
        "not yet 2 min"
    );
    rig.clock.advance(Duration::from_secs(61));
    let fired = rig.service.evaluate_alerts().await;
    assert_eq!(kinds(&fired), vec![("keycrm_unavailable", true)]);
    assert!(fired[0].alert.message.contains("121 s"), "{:?}", fired[0]);
    for _ in 0..3 {
        let _ = rig.engine.run_once().await;
        rig.clock.advance(Duration::from_secs(300));
        assert!(
            rig.service.evaluate_alerts().await.is_empty(),
            "once per episode"
        );
    }
    assert_eq!(rig.service.firing_alerts().len(), 1);
    let metrics = rig.service.metrics_text().await.unwrap();
    assert!(metrics.contains("keycrm_sync_alerts_firing{alert=\"keycrm_unavailable\"} 1"));

    // KeyCRM is back: resolved, once.
    rig.mock.faults().clear();
    rig.engine.run_once().await.unwrap();
    let resolved = rig.service.evaluate_alerts().await;
    assert_eq!(kinds(&resolved), vec![("keycrm_unavailable", false)]);
    assert!(rig.service.evaluate_alerts().await.is_empty());
    let metrics = rig.service.metrics_text().await.unwrap();
    assert!(metrics.contains("keycrm_sync_alerts_firing{alert=\"keycrm_unavailable\"} 0"));

    // A second outage is a second episode.
    rig.mock.faults().fail_next(100_000, 503);
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("new".into()));
    let _ = rig.engine.run_once().await;
    rig.clock.advance(Duration::from_secs(121));
    assert_eq!(
        kinds(&rig.service.evaluate_alerts().await),
        vec![("keycrm_unavailable", true)]
    );

    // Every transition went to the notifiers, the webhook and the event stream.
    let expected = vec![
        ("keycrm_unavailable".to_string(), true),
        ("keycrm_unavailable".to_string(), false),
        ("keycrm_unavailable".to_string(), true),
    ];
    assert_eq!(*rig.notes.0.lock().unwrap(), expected);
    let posts = rig.hook.received_requests().await.unwrap();
    assert_eq!(posts.len(), 3);
    let first: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(first["alert"], "keycrm_unavailable");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["firing"], true);
    let second: serde_json::Value = serde_json::from_slice(&posts[1].body).unwrap();
    assert_eq!(second["firing"], false);
    let mut alerts = Vec::new();
    while alerts.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap();
        if let SyncEvent::Alert { alert, firing, .. } = event {
            alerts.push((alert, firing));
        }
    }
    assert_eq!(alerts, expected);
}

#[tokio::test]
async fn a_dead_letter_is_critical_until_it_is_handled() {
    let rig = rig().await;
    rig.host.put_order(order(2, "lost-in-space"));
    rig.engine.run_once().await.unwrap();
    let fired = rig.service.evaluate_alerts().await;
    assert_eq!(kinds(&fired), vec![("sync_errors", true)]);
    assert_eq!(fired[0].alert.severity.as_str(), "critical");
    assert!(!fired[0].alert.message.contains("Покупець"));
    assert!(rig.service.evaluate_alerts().await.is_empty());
    let dead = rig.service.dead_letters().await.unwrap();
    rig.service.discard_dead_letter(dead[0].id.0).await.unwrap();
    assert_eq!(
        kinds(&rig.service.evaluate_alerts().await),
        vec![("sync_errors", false)]
    );
    assert!(rig.service.evaluate_alerts().await.is_empty());
    let status = rig.service.status().await.unwrap();
    assert!(status.alerts.is_empty());
}

#[tokio::test]
async fn a_run_longer_than_ten_minutes_exceeds_processing_time() {
    let rig = rig().await;
    rig.host.put_order(order(3, "new"));
    let started = Arc::new(tokio::sync::Notify::new());
    {
        let started = started.clone();
        rig.engine.observe_runs(move |phase| {
            if let RunPhase::Started { .. } = phase {
                started.notify_one();
            }
        });
    }
    // A slow KeyCRM keeps the run going while the virtual clock moves.
    rig.mock.faults().set_latency(Duration::from_millis(200));
    let engine = rig.engine.clone();
    let run = tokio::spawn(async move { engine.run_once().await });
    started.notified().await;
    rig.clock.advance(Duration::from_secs(601));
    let fired = rig.service.evaluate_alerts().await;
    assert_eq!(kinds(&fired), vec![("processing_time_exceeded", true)]);
    assert_eq!(fired[0].alert.severity.as_str(), "warning");
    assert!(fired[0].alert.message.contains("run lasts"));
    run.await.unwrap().unwrap();
    assert_eq!(
        kinds(&rig.service.evaluate_alerts().await),
        vec![("processing_time_exceeded", false)]
    );
}
