//! A small warehouse management system kept in agreement with KeyCRM: the README's main
//! command.
//!
//! The warehouse has its own SQLite schema (`schema.sql`: orders with lines, payments and
//! shipping; customers; products and articles; stock per warehouse). Its host (`db.rs`) is the
//! SQL mapping of that schema behind `CanonicalHost`'s repository traits, over the database
//! plumbing in `sql.rs`; the engine, the service layer (router, dashboard, inbox worker,
//! alerts) and a SQLite store do the rest.
//!
//! ```text
//! cargo run --example warehouse                      # the simulated scenario, 30 s
//! cargo run --example warehouse -- --duration 10     # shorter (what CI runs)
//! cargo run --example warehouse -- --serve           # then keep serving the dashboard
//! KEYCRM_API_KEY=... cargo run --example warehouse -- --config keycrm-sync.toml [--apply]
//! ```
//!
//! Without `KEYCRM_API_KEY` it starts the KeyCRM simulator, seeds both sides, syncs them
//! (a progress bar per kind), runs scripted activity on both sides for `--duration`, settles,
//! and prints a report; it exits 0 only when both sides agree record for record.
//!
//! With `KEYCRM_API_KEY` it syncs a real account with the warehouse database
//! (`--db`, default `warehouse.db`) in dry-run (the engine's `dry_run`: every write to KeyCRM is
//! planned and logged, none is sent; KeyCRM's records are still applied to the warehouse
//! database) unless `--apply` is given. It reads only what the engine reads.

mod db;
mod report;
mod scenario;
mod sql;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig, reference};
use keycrm::sync::canonical::Mappings;
use keycrm::sync::config::{Secret, SyncConfig};
use keycrm::sync::host::CanonicalHost;
use keycrm::sync::http::{HttpOptions, Service, router_with};
use keycrm::sync::model::EntityKind;
use keycrm::sync::store::SqliteStore;
use keycrm::sync::{CancellationToken, SyncEngine, SyncEvent};

use scenario::{PAYMENT_METHODS, STATUSES, Sizes, WAREHOUSES};
use sql::Warehouse;

type Host = CanonicalHost<Warehouse>;
type Engine = SyncEngine<SqliteStore, Host>;

const USAGE: &str = "usage: warehouse [--duration SECS] [--serve] [--port PORT] \
                     [--config keycrm-sync.toml] [--apply] [--db PATH]";

/// Command-line flags, parsed by hand: a handful of flags do not need a parser crate.
#[derive(Debug)]
struct Args {
    duration: Duration,
    serve: bool,
    port: u16,
    config: Option<String>,
    apply: bool,
    db: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        duration: Duration::from_secs(30),
        serve: false,
        port: 0,
        config: None,
        apply: false,
        db: None,
    };
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--duration" => {
                let secs = value("--duration")?;
                out.duration =
                    Duration::from_secs(secs.parse().map_err(|_| "--duration takes seconds")?);
            }
            "--serve" => out.serve = true,
            "--port" => {
                out.port = value("--port")?
                    .parse()
                    .map_err(|_| "--port takes a number")?
            }
            "--config" => out.config = Some(value("--config")?),
            "--apply" => out.apply = true,
            "--db" => out.db = Some(value("--db")?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(out)
}

/// The names the warehouse uses, mapped to the simulator's reference ids.
fn simulator_config(mock: &KeyCrmMock, token: &str) -> SyncConfig {
    let names = |pairs: &[(&str, i64)]| pairs.iter().map(|(n, id)| (n.to_string(), *id)).collect();
    SyncConfig {
        base_url: mock.uri(),
        api_key: Secret::new(mock.api_key()),
        webhook_secret: Secret::new(token),
        requests_per_minute: 60_000,
        sync_interval_secs: 1,
        // Production's ratios to a 5-minute run (an hour, a day) for 1-second runs.
        catalogue_pass_interval_secs: 12,
        stock_pass_interval_secs: 288,
        retry_attempts: 3,
        max_concurrency: 16,
        source_id: Some(reference::SOURCE_WEBSITE),
        status_ids: names(&STATUSES),
        payment_method_ids: names(&PAYMENT_METHODS),
        warehouse_ids: names(&WAREHOUSES),
        ..SyncConfig::default()
    }
}

/// The service layer on `port` (0: any free port); returns its address.
async fn serve(
    service: Service<SqliteStore, Host>,
    port: u16,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let app = router_with(service);
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

/// The outbox's clock in the simulation: 60 times faster than real time, so that a failed
/// record's retries (30 s, doubling) happen within the scenario and one that keeps failing
/// is dead-lettered, as it would be after an hour in production.
fn scaled_clock() -> impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static {
    let (real, wall) = (Instant::now(), chrono::Utc::now());
    move || wall + chrono::Duration::from_std(real.elapsed() * 60).unwrap_or_default()
}

fn build_engine(
    config: SyncConfig,
    client: keycrm::Client,
    host: Host,
    store: SqliteStore,
    shutdown: &CancellationToken,
    outbox_clock: Option<impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static>,
) -> Result<Engine, Box<dyn std::error::Error>> {
    let mappings = Mappings::from_config(&config);
    let mut builder = SyncEngine::builder()
        .client(client)
        .store(store)
        .host(host)
        .mappings(mappings)
        .config(config)
        .shutdown(shutdown.clone());
    if let Some(clock) = outbox_clock {
        builder = builder.outbox_clock(clock);
    }
    Ok(builder.build()?)
}

/// Runs until nothing is left to do (no outbox, no inbox), at most `max` runs.
async fn settle(engine: &Engine, max: usize) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..max {
        let report = engine.run_once().await?;
        let status = engine.status().await?;
        if report.collected == 0
            && report.pushed == 0
            && report.applied == 0
            && status.outbox_depth == status.dead_letters
            && status.inbox_backlog == 0
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The first sync with a progress bar per kind (records pushed or applied).
async fn first_sync(
    engine: &Engine,
    totals: &BTreeMap<EntityKind, u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let bar: BTreeMap<EntityKind, ProgressBar> = totals
        .iter()
        .map(|(kind, total)| {
            let bar = bars.add(ProgressBar::new(*total));
            bar.set_style(style.clone());
            bar.set_prefix(kind.as_str());
            (*kind, bar)
        })
        .collect();
    let events = engine.subscribe();
    let progress = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let kind = match event {
                    SyncEvent::Pushed { kind, .. } | SyncEvent::Applied { kind, .. } => kind,
                    _ => continue,
                };
                if let Some(b) = bar.get(&kind) {
                    if b.position() >= b.length().unwrap_or(0) {
                        b.inc_length(1);
                    }
                    b.inc(1);
                }
            }
        })
    };
    settle(engine, 20).await?;
    progress.abort();
    for b in bar.values() {
        b.finish_with_message("in sync");
    }
    Ok(())
}

async fn simulate(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let token = "warehouse-webhook-token";
    let mock = KeyCrmMock::builder()
        .quota(Quota::per_minute(60_000))
        .seed(SeedConfig {
            buyers: 60,
            products: 30,
            orders: 80,
            cards: 0,
            calls: 0,
            transactions: 0,
            ..SeedConfig::default()
        })
        .start()
        .await;
    println!("KeyCRM simulator at {}", mock.uri());
    let config = simulator_config(&mock, token);
    let client = config
        .client_builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    let wh = Warehouse::open(args.db.as_deref().unwrap_or(":memory:"))?;
    let sizes = Sizes {
        orders: 500,
        customers: 200,
        articles: 300,
    };
    scenario::seed(&wh, &client, &sizes).await?;
    let before = report::counts(&wh, &client).await?;
    println!(
        "seeded: warehouse {} / KeyCRM {}",
        report::line(&before, true),
        report::line(&before, false)
    );

    let shutdown = CancellationToken::new();
    let host = CanonicalHost::new(wh.clone(), Mappings::from_config(&config));
    let engine = build_engine(
        config,
        client.clone(),
        host,
        SqliteStore::open_in_memory()?,
        &shutdown,
        Some(scaled_clock()),
    )?;
    let mut options = HttpOptions::new("warehouse-admin-token");
    options.alert_interval = Some(Duration::from_millis(500));
    let service = Service::new(engine.clone(), options);
    let alerts = report::AlertLog::watch(&engine);
    let addr = serve(service.clone(), args.port, shutdown.clone()).await?;
    mock.register_webhook(format!("http://{addr}/webhooks/keycrm?token={token}"));
    mock.register_stock_webhook(format!("http://{addr}/webhooks/keycrm?token={token}"));
    tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run_inbox_worker(shutdown).await }
    });

    println!("first sync");
    let totals = before
        .iter()
        .map(|(k, c)| (*k, c.local.max(c.remote)))
        .collect();
    first_sync(&engine, &totals).await?;
    println!(
        "first sync done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!("activity for {} s", args.duration.as_secs());
    let runner = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });
    let activity = scenario::activity(&wh, &mock, &service, args.duration).await;
    println!("{activity}");
    shutdown.cancel();
    let _ = runner.await;

    // A last pass: everything pushed and pulled, then a full reconciliation, then compare.
    let settling = Instant::now();
    settle(&engine, 10).await?;
    engine.full_resync().await?;
    settle(&engine, 10).await?;
    println!(
        "settled with a full reconciliation in {:.1} s",
        settling.elapsed().as_secs_f64()
    );
    service.evaluate_alerts().await;
    let verdict = report::compare(&wh, &client, &engine).await?;
    let dead = service
        .dead_letters()
        .await
        .map_err(|e| e.body().to_string())?;
    let conflicts = service
        .conflicts()
        .await
        .map_err(|e| e.body().to_string())?;
    println!("{verdict}");
    println!(
        "requests: {} served by KeyCRM (quota {}/min), {} answered 429 or 5xx; the engine sent {}",
        mock.request_count(),
        60_000,
        mock.rate_limited() + mock.faults().served(),
        engine.client().stats().requests
    );
    println!(
        "conflicts: {}; dead letters: {}",
        conflicts.len(),
        dead.len()
    );
    println!("{}", alerts.summary());
    println!("took {:.1} s", started.elapsed().as_secs_f64());

    if args.serve {
        let shutdown = CancellationToken::new();
        let engine = engine.clone();
        let addr = serve(
            Service::new(engine.clone(), HttpOptions::new("warehouse-admin-token")),
            args.port,
            shutdown.clone(),
        )
        .await?;
        println!("dashboard: http://{addr}/ (admin token warehouse-admin-token); Ctrl-C stops");
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        tokio::signal::ctrl_c().await?;
        shutdown.cancel();
    }
    Ok(verdict.agree)
}

/// A real account: dry-run unless `--apply`.
async fn real_account(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(path) => {
            SyncConfig::from_toml_file(path)?.with_env(|name| std::env::var(name).ok())?
        }
        None => SyncConfig::from_env()?,
    };
    config.dry_run = !args.apply;
    println!(
        "syncing the KeyCRM account at {} with {} ({})",
        config.base_url,
        args.db.as_deref().unwrap_or("warehouse.db"),
        if config.dry_run {
            "dry run: no write is sent to KeyCRM (its records are applied to the warehouse database); --apply sends them"
        } else {
            "applying"
        }
    );
    let wh = Warehouse::open(args.db.as_deref().unwrap_or("warehouse.db"))?;
    let shutdown = CancellationToken::new();
    let client = config.client_builder().build()?;
    let host = CanonicalHost::new(wh, Mappings::from_config(&config));
    let store = SqliteStore::open("warehouse-sync.db")?;
    let engine = build_engine(
        config,
        client,
        host,
        store,
        &shutdown,
        None::<fn() -> chrono::DateTime<chrono::Utc>>,
    )?;
    let report = engine.run_once().await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if args.serve {
        let service = Service::new(
            engine.clone(),
            HttpOptions::new(std::env::var("WAREHOUSE_ADMIN_TOKEN").unwrap_or_default()),
        );
        let addr = serve(service, args.port, shutdown.clone()).await?;
        println!("dashboard: http://{addr}/ (admin token: $WAREHOUSE_ADMIN_TOKEN); Ctrl-C stops");
        tokio::spawn({
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        tokio::signal::ctrl_c().await?;
        shutdown.cancel();
    }
    Ok(report.failed == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let outcome = if std::env::var_os("KEYCRM_API_KEY").is_some() {
        real_account(args).await
    } else {
        simulate(args).await
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_configuration_parses() {
        let text = include_str!("../../keycrm-sync.toml");
        let config = SyncConfig::from_toml_str(text).expect("keycrm-sync.toml parses");
        assert!(config.dry_run, "the sample is a dry run");
        assert_eq!(
            config.warehouse_ids.get("KYIV"),
            Some(&reference::WAREHOUSE_KYIV)
        );
        assert_eq!(
            config.status_ids.get("shipped"),
            Some(&reference::STATUS_SHIPPED)
        );
        assert_eq!(
            config.payment_method_ids.get("card"),
            Some(&reference::PAYMENT_LIQPAY)
        );
        let defaults = SyncConfig::default();
        assert_eq!(
            (
                config.catalogue_pass_interval_secs,
                config.stock_pass_interval_secs
            ),
            (
                defaults.catalogue_pass_interval_secs,
                defaults.stock_pass_interval_secs
            ),
            "the sample shows the default schedule"
        );
    }

    #[test]
    fn flags_parse() {
        let args = parse_args(
            ["--duration", "10", "--serve", "--apply"]
                .map(String::from)
                .into_iter(),
        )
        .unwrap();
        assert_eq!(args.duration, Duration::from_secs(10));
        assert!(args.serve && args.apply);
        assert!(parse_args(["--nope"].map(String::from).into_iter()).is_err());
        assert!(parse_args(["--duration"].map(String::from).into_iter()).is_err());
    }
}
