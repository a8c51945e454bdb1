//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! started here on a free port). The page loads and shows the counts, a change made in the
//! simulator's CRM appears in the live feed, Retry on a dead letter removes it from the list;
//! screenshots go to `target/` (desktop and 360 px wide).
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use keycrm::api::Decimal;
use keycrm::api::mock::{KeyCrmMock, Quota};
use keycrm::sync::canonical::{CanonicalContact, CanonicalLine, CanonicalOrder, Mappings};
use keycrm::sync::config::{Secret, SyncConfig};
use keycrm::sync::host::MemoryHost;
use keycrm::sync::http::{HttpOptions, router};
use keycrm::sync::model::EntityKind;
use keycrm::sync::store::{MemoryStore, Store};
use keycrm::sync::{CancellationToken, SyncEngine};
use serde_json::{Value, json};

const TOKEN: &str = "browser-admin-token";

/// chromedriver, killed when the test ends (also when it fails).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver) is installed");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // chromedriver takes a moment to listen: try for up to 20 s.
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..200 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot start a browser session: {last_error:?}");
}

/// Waits until a JavaScript expression is true in the page (up to 20 s).
async fn wait_for(client: &Client, expression: &str) {
    let script = format!("return !!({expression});");
    for _ in 0..200 {
        if client.execute(&script, vec![]).await.unwrap() == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let html = client
        .execute("return document.body.innerText;", vec![])
        .await
        .unwrap();
    panic!("the page never showed `{expression}`; it shows:\n{html}");
}

async fn text(client: &Client, expression: &str) -> String {
    client
        .execute(&format!("return {expression};"), vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn order(n: u32, status: &str) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("WMS-{n}"),
        number: Some(format!("WMS-{n}")),
        status: Some(status.into()),
        buyer: CanonicalContact {
            name: Some(format!("Покупець {n}")),
            phone: Some(format!("+38050{n:07}")),
            email: None,
        },
        lines: vec![CanonicalLine {
            sku: format!("SKU-{n}"),
            name: "Чай".into(),
            quantity: Decimal::from(1),
            price: "99.50".parse().unwrap(),
        }],
        ..CanonicalOrder::default()
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_counts_live_changes_and_retries_dead_letters() {
    // The simulator and an engine with one synced order and one dead letter.
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    let config = SyncConfig {
        api_key: Secret::new("test"),
        source_id: Some(1),
        retry_attempts: 1,
        webhook_secret: Secret::new("hook-token"),
        status_ids: BTreeMap::from([
            ("new".to_string(), 1),
            ("approved".to_string(), 2),
            ("packing".to_string(), 3),
        ]),
        ..SyncConfig::default()
    };
    let host = MemoryHost::new(Mappings::from_config(&config));
    let shutdown = CancellationToken::new();
    let engine: SyncEngine<MemoryStore, MemoryHost> = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .shutdown(shutdown.clone())
        .build()
        .unwrap();
    host.put_order(order(1, "new"));
    host.put_order(order(2, "lost-in-space"));
    engine.run_once().await.unwrap();
    assert_eq!(engine.store().dead_letters(None).await.unwrap().len(), 1);

    // Served under a prefix, as a host would mount it.
    let app = axum::Router::new().nest(
        "/sync-admin",
        router(engine.clone(), HttpOptions::new(TOKEN)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = shutdown.clone();
    // KeyCRM's webhooks come to the router; the inbox worker applies them as they arrive.
    mock.register_webhook(format!(
        "http://{addr}/sync-admin/webhooks/keycrm?token=hook-token"
    ));
    let worker = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run_inbox_worker(shutdown).await }
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });

    let profile = target_dir().join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let (_driver, browser) = start_browser(&profile).await;
    let page = format!("http://{addr}/sync-admin");
    browser.goto(&page).await.unwrap();

    // The token is asked once.
    wait_for(&browser, "!document.getElementById('login').hidden").await;
    browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Counts per kind, outbox, dead letters.
    wait_for(
        &browser,
        "document.querySelector('#counts tr[data-kind=order] td[data-col=synced]')?.textContent === '1'",
    )
    .await;
    assert_eq!(
        text(
            &browser,
            "document.querySelector('#counts tr[data-kind=order] td[data-col=dead]').textContent"
        )
        .await,
        "1"
    );
    assert_eq!(
        text(
            &browser,
            "document.getElementById('dead-count').textContent"
        )
        .await,
        "1"
    );
    assert_eq!(
        text(&browser, "document.getElementById('outbox').textContent").await,
        "0"
    );
    wait_for(
        &browser,
        "document.getElementById('conn').textContent === 'live'",
    )
    .await;

    // A change made in KeyCRM (a manager moves the order on) reaches the live feed: KeyCRM's
    // webhook, the receiver, the inbox worker, the event stream, the page.
    let remote = engine
        .store()
        .get_mapping(EntityKind::Order, "WMS-1")
        .await
        .unwrap()
        .unwrap()
        .remote_id
        .unwrap();
    mock.crm().set_order_status(remote, 3);
    wait_for(
        &browser,
        "[...document.querySelectorAll('#feed li')].some(li => li.dataset.type === 'applied' && li.textContent.includes('WMS-1'))",
    )
    .await;
    assert_eq!(
        host.order("WMS-1").unwrap().status.as_deref(),
        Some("packing")
    );
    assert!(!mock.webhook_deliveries().is_empty());

    // The token is kept for the session: a reload does not ask again.
    browser.refresh().await.unwrap();
    wait_for(
        &browser,
        "document.getElementById('login').hidden && !document.getElementById('app').hidden",
    )
    .await;
    wait_for(
        &browser,
        "document.querySelectorAll('#dead li[data-id]').length === 1",
    )
    .await;
    browser
        .screenshot()
        .await
        .map(|png| std::fs::write(target_dir().join("dashboard.png"), png).unwrap())
        .unwrap();

    // Retry removes the dead letter from the list (it is queued again).
    browser
        .find(Locator::Css("#dead li[data-id] button.retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        &browser,
        "document.querySelectorAll('#dead li[data-id]').length === 0",
    )
    .await;
    assert!(engine.store().dead_letters(None).await.unwrap().is_empty());
    assert_eq!(engine.status().await.unwrap().outbox_depth, 1);

    // 360 px wide: nothing overflows sideways.
    browser.set_window_size(360, 800).await.unwrap();
    wait_for(
        &browser,
        "document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(target_dir().join("dashboard-360.png"), png).unwrap();

    browser.close().await.unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server shut down with the page's event stream open")
        .unwrap();
    worker.await.unwrap();
    let _ = std::fs::remove_dir_all(&profile);
}
