//! `keycrm-mock`: the KeyCRM simulator of `keycrm_api::mock` as a standalone server, for
//! tests written in any language (PHP, Python, JavaScript...) and for trying the API
//! without an account.
//!
//! ```text
//! keycrm-mock --port 8088 --seed 42 --orders 500 --quota 60 --api-key test
//! ```
//!
//! It serves KeyCRM's 59 operations under `http://127.0.0.1:PORT/v1` and the admin API
//! under `http://127.0.0.1:PORT/__mock/`, prints the base URL and the seeded ids, and stops
//! on Ctrl-C (SIGINT) or SIGTERM. `keycrm-mock --help` lists the options.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use keycrm_api::mock::{DEFAULT_API_KEY, KeyCrmMock, KeyCrmMockBuilder, Quota, SeedConfig};
use serde_json::Value;

const USAGE: &str = "\
keycrm-mock: a KeyCRM simulator on loopback (all 59 operations of the Open API v1)

USAGE:
    keycrm-mock [OPTIONS]

SERVER:
    --port <N>               port on 127.0.0.1 (default 8088; 0 picks a free one)
    --api-key <KEY>          the accepted API key (default keycrm-mock-key;
                             or the environment variable KEYCRM_MOCK_API_KEY)
    --quota <N>              requests per minute per key, as KeyCRM (default 60; 0: unlimited)
    --no-leads               switch the pipelines (leads) module off (answers 400)

DATA (deterministic: the same options give the same records and ids):
    --seed <N>               generator seed (default 42)
    --orders <N>             seeded orders (default 60)
    --buyers <N>             seeded buyers (default 25)
    --products <N>           seeded products, 1-3 offers each (default 12)
    --cards <N>              seeded pipeline cards (default 8)
    --empty                  no seeded records, reference data only

FAULTS (kept after POST /__mock/reset):
    --fail-share <SHARE>     answer a seeded share (0..1) of requests with an error
    --fail-status <CODE>     the status of those errors (default 500; 429 adds Retry-After)
    --latency-ms <MS>        delay every answer
    --lose-creates <SHARE>   apply a share (0..1) of creates but hold their answer back
    --lost-delay-secs <S>    how long a lost answer is held back (default 120)

WEBHOOKS (KeyCRM's JSON POSTs, retried until answered 200):
    --webhook <URL>          receiver of order and lead events (repeatable)
    --stock-webhook <URL>    receiver of the stock webhook (repeatable)
    --webhook-attempts <N>   attempts per delivery (default 3)

    -h, --help               this text
    -V, --version            the version

The admin API (no key needed) is documented in the README: GET /__mock/health,
GET /__mock/reference, POST /__mock/reset, POST /__mock/seed, GET|DELETE /__mock/requests,
PUT /__mock/orders/{id}/status, GET|POST /__mock/webhooks, PUT|DELETE /__mock/faults...
";

/// The command line, parsed.
#[derive(Debug)]
struct Options {
    port: u16,
    api_key: Option<String>,
    quota: u32,
    leads: bool,
    seed: Option<SeedConfig>,
    fail_share: Option<f64>,
    fail_status: u16,
    latency_ms: u64,
    lose_creates: Option<f64>,
    lost_delay_secs: u64,
    webhooks: Vec<String>,
    stock_webhooks: Vec<String>,
    webhook_attempts: u32,
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Serve(Box<Options>),
    Help,
    Version,
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid number"))
}

fn share(flag: &str, value: &str) -> Result<f64, String> {
    let share: f64 = number(flag, value)?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!("{flag}: a share is from 0 to 1, not {value}"))
    }
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut o = Options {
        port: 8088,
        api_key: std::env::var("KEYCRM_MOCK_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        quota: 60,
        leads: true,
        seed: Some(SeedConfig::default()),
        fail_share: None,
        fail_status: 500,
        latency_ms: 0,
        lose_creates: None,
        lost_delay_secs: 120,
        webhooks: Vec::new(),
        stock_webhooks: Vec::new(),
        webhook_attempts: 3,
    };
    let mut empty = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = !matches!(
            flag.as_str(),
            "-h" | "--help" | "-V" | "--version" | "--no-leads" | "--empty"
        );
        let value = if takes_value {
            match inline.or_else(|| args.next()) {
                Some(v) => v,
                None => return Err(format!("{flag} needs a value")),
            }
        } else {
            if inline.is_some() {
                return Err(format!("{flag} takes no value"));
            }
            String::new()
        };
        let seed = o.seed.get_or_insert_with(SeedConfig::default);
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--no-leads" => o.leads = false,
            "--empty" => empty = true,
            "--port" => o.port = number(&flag, &value)?,
            "--api-key" => {
                if value.trim().is_empty() {
                    return Err("--api-key must not be empty".into());
                }
                o.api_key = Some(value);
            }
            "--quota" => o.quota = number(&flag, &value)?,
            "--seed" => seed.seed = number(&flag, &value)?,
            "--orders" => seed.orders = number(&flag, &value)?,
            "--buyers" => seed.buyers = number(&flag, &value)?,
            "--products" => seed.products = number(&flag, &value)?,
            "--cards" => seed.cards = number(&flag, &value)?,
            "--fail-share" => o.fail_share = Some(share(&flag, &value)?),
            "--fail-status" => {
                o.fail_status = number(&flag, &value)?;
                if !(400..=599).contains(&o.fail_status) {
                    return Err(format!("{flag}: an error status is 400 to 599"));
                }
            }
            "--latency-ms" => o.latency_ms = number(&flag, &value)?,
            "--lose-creates" => o.lose_creates = Some(share(&flag, &value)?),
            "--lost-delay-secs" => o.lost_delay_secs = number(&flag, &value)?,
            "--webhook" => o.webhooks.push(url(&flag, value)?),
            "--stock-webhook" => o.stock_webhooks.push(url(&flag, value)?),
            "--webhook-attempts" => o.webhook_attempts = number(&flag, &value)?,
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    if empty {
        o.seed = None;
    }
    Ok(Command::Serve(Box::new(o)))
}

fn url(flag: &str, value: String) -> Result<String, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value)
    } else {
        Err(format!("{flag}: an http:// or https:// URL is expected"))
    }
}

/// A URL with its path and query hidden: receiver URLs often carry a secret token.
fn origin_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let scheme = url.split_once("://").map_or("http", |(s, _)| s);
    let hidden = if host_end < rest.len() { "/…" } else { "" };
    format!("{scheme}://{}{hidden}", &rest[..host_end])
}

fn builder(o: &Options) -> KeyCrmMockBuilder {
    let mut b = KeyCrmMock::builder()
        .api_key(o.api_key.clone().unwrap_or_else(|| DEFAULT_API_KEY.into()))
        .quota(if o.quota == 0 {
            Quota::unlimited()
        } else {
            Quota::per_minute(o.quota)
        })
        .leads_enabled(o.leads)
        .webhook_attempts(o.webhook_attempts)
        .lost_response_delay(Duration::from_secs(o.lost_delay_secs))
        .latency(Duration::from_millis(o.latency_ms));
    if let Some(seed) = &o.seed {
        b = b.seed(seed.clone());
    }
    if let Some(share) = o.fail_share {
        b = b.fail_share(share, o.fail_status, o.seed.as_ref().map_or(42, |s| s.seed));
    }
    if let Some(share) = o.lose_creates {
        b = b.lose_create_share(share, o.seed.as_ref().map_or(42, |s| s.seed));
    }
    for url in &o.webhooks {
        b = b.webhook(url.clone());
    }
    for url in &o.stock_webhooks {
        b = b.stock_webhook(url.clone());
    }
    b
}

/// `first..=last (n)` for a list of ids.
fn span(ids: &[i64]) -> String {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) if a == b => format!("{a} (1)"),
        (Some(a), Some(b)) => format!("{a}..={b} ({})", ids.len()),
        _ => "none".into(),
    }
}

/// `1 Новий, 2 Погоджено, ...` for a reference list.
fn ids_and_names(rows: &Value) -> String {
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let id = r["id"].as_i64().unwrap_or_default();
                    let name = r["name"]
                        .as_str()
                        .or_else(|| r["full_name"].as_str())
                        .unwrap_or("");
                    match r["uuid"].as_str() {
                        Some(uuid) => format!("{uuid} {name}"),
                        None => format!("{id} {name}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn banner(mock: &KeyCrmMock, o: &Options) -> String {
    let base = mock.uri();
    let origin = base.trim_end_matches("/v1");
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "keycrm-mock {}: KeyCRM simulator ready",
        env!("CARGO_PKG_VERSION")
    ));
    line(format!("KEYCRM_BASE_URL={base}"));
    line(format!("admin API: {origin}/__mock/"));
    line(match &o.api_key {
        None => format!("API key: {DEFAULT_API_KEY} (send `Authorization: Bearer <key>`)"),
        Some(_) => "API key: the one given (send `Authorization: Bearer <key>`)".into(),
    });
    line(match o.quota {
        0 => "quota: unlimited".into(),
        n => format!("quota: {n} requests per minute (429 with Retry-After beyond)"),
    });
    line(format!("leads: {}", if o.leads { "on" } else { "off" }));
    if let (Some(seed), Some(ids)) = (&o.seed, mock.seeded()) {
        line(format!("seeded (seed {}):", seed.seed));
        for (key, list) in [
            ("orders", &ids.orders),
            ("buyers", &ids.buyers),
            ("companies", &ids.companies),
            ("categories", &ids.categories),
            ("products", &ids.products),
            ("offers", &ids.offers),
            ("cards", &ids.cards),
            ("calls", &ids.calls),
            ("transactions", &ids.transactions),
        ] {
            line(format!("  {key:<13}{}", span(list)));
        }
    } else {
        line("seeded: nothing (reference data only)".into());
    }
    let reference = mock.reference();
    line("reference ids:".into());
    for (key, label) in [
        ("order_statuses", "order statuses"),
        ("payment_methods", "payment methods"),
        ("sources", "sources"),
        ("warehouses", "warehouses"),
        ("delivery_services", "delivery services"),
        ("expense_types", "expense types"),
        ("tags", "tags"),
        ("users", "users"),
        ("custom_fields", "custom fields"),
        ("pipelines", "pipelines"),
        ("pipeline_statuses", "pipeline stages"),
    ] {
        line(format!("  {label:<18}{}", ids_and_names(&reference[key])));
    }
    let mut faults = Vec::new();
    if let Some(s) = o.fail_share {
        faults.push(format!("{:.1} % answered {}", s * 100.0, o.fail_status));
    }
    if o.latency_ms > 0 {
        faults.push(format!("{} ms latency", o.latency_ms));
    }
    if let Some(s) = o.lose_creates {
        faults.push(format!(
            "{:.1} % of create answers held back {} s",
            s * 100.0,
            o.lost_delay_secs
        ));
    }
    line(format!(
        "faults: {}",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    ));
    for (kind, urls) in [("order/lead", &o.webhooks), ("stock", &o.stock_webhooks)] {
        if !urls.is_empty() {
            let shown: Vec<String> = urls.iter().map(|u| origin_of(u)).collect();
            line(format!("{kind} webhooks to: {}", shown.join(", ")));
        }
    }
    line("Ctrl-C stops.".into());
    out
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let int = std::pin::pin!(int.recv());
        let term = std::pin::pin!(term.recv());
        Ok(match futures_util::future::select(int, term).await {
            futures_util::future::Either::Left(_) => "SIGINT",
            futures_util::future::Either::Right(_) => "SIGTERM",
        })
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

async fn serve(o: Options) -> Result<(), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, o.port));
    let listener =
        TcpListener::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
    // Signals are installed before the banner, so a supervisor that reads the banner and
    // then stops the server is always heard.
    let signal = shutdown_signal();
    let mock = builder(&o).start_on(listener).await;
    print!("{}", banner(&mock, &o));
    use std::io::Write;
    std::io::stdout().flush().ok();
    let which = signal
        .await
        .map_err(|e| format!("cannot wait for signals: {e}"))?;
    eprintln!("keycrm-mock: {which} received, stopping");
    drop(mock);
    Ok(())
}

fn main() -> ExitCode {
    let command = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keycrm-mock: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("keycrm-mock {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Serve(o) => *o,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keycrm-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keycrm-mock: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_issue_command_line_parses() {
        let Command::Serve(o) = parse(args(
            "--port 8088 --seed 42 --orders 500 --quota 60 --api-key test",
        ))
        .unwrap() else {
            panic!("expected serve")
        };
        assert_eq!(o.port, 8088);
        assert_eq!(o.quota, 60);
        assert_eq!(o.api_key.as_deref(), Some("test"));
        let seed = o.seed.unwrap();
        assert_eq!((seed.seed, seed.orders), (42, 500));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(parse(args("--port")).is_err());
        assert!(parse(args("--port abc")).is_err());
        assert!(parse(args("--fail-share 2")).is_err());
        assert!(parse(args("--webhook ftp://x")).is_err());
        assert!(parse(args("--frobnicate")).is_err());
        assert!(parse(args("--empty=1")).is_err());
        assert!(matches!(parse(args("--help")), Ok(Command::Help)));
    }

    #[test]
    fn faults_and_webhooks_parse_with_equals() {
        let Command::Serve(o) = parse(args(
            "--fail-share=0.1 --fail-status=503 --latency-ms 20 --lose-creates 0.5 \
             --webhook http://127.0.0.1:9/hook?token=s3cret --stock-webhook http://h/s --no-leads --empty",
        ))
        .unwrap() else {
            panic!("expected serve")
        };
        assert_eq!(o.fail_share, Some(0.1));
        assert_eq!(o.fail_status, 503);
        assert_eq!(o.latency_ms, 20);
        assert_eq!(o.lose_creates, Some(0.5));
        assert_eq!(o.webhooks.len(), 1);
        assert!(!o.leads);
        assert!(o.seed.is_none());
    }

    #[test]
    fn receiver_urls_are_shown_without_their_token() {
        assert_eq!(
            origin_of("http://127.0.0.1:9000/hooks/keycrm?token=s3cret"),
            "http://127.0.0.1:9000/…"
        );
        assert_eq!(origin_of("https://shop.example"), "https://shop.example");
    }
}
