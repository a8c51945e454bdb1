//! Peak memory while streaming 100,000 orders (2,000 pages of 50) through the paginator.
//! Pages are generated on the fly by a loopback server; the figure is the process's peak
//! resident set (VmHWM), before and after.
//!
//! ```sh
//! cargo bench --bench paginate_memory
//! ```

use std::time::Instant;

use futures::TryStreamExt;
use keycrm::api::{Client, Paginate};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const PAGES: u64 = 2_000;
const PER_PAGE: u64 = 50;

struct Orders;

impl Respond for Orders {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let page: u64 = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        let data: Vec<_> = (0..PER_PAGE)
            .map(|i| {
                let id = (page - 1) * PER_PAGE + i + 1;
                json!({"id": id, "source_uuid": format!("WMS-{id}"), "source_id": 1, "status_id": 1,
                       "grand_total": "1249.50", "payment_status": "paid",
                       "created_at": "2024-03-14T07:05:10.000000Z", "updated_at": "2024-03-14 09:15:00",
                       "buyer": {"id": id, "full_name": "Олена Коваленко", "phone": "+380501234567"},
                       "products": [{"sku": "ART-1", "price": 149.9, "quantity": "2.5", "name": "Чай"}]})
            })
            .collect();
        let next = (page < PAGES).then(|| format!("http://x/order?page={}", page + 1));
        ResponseTemplate::new(200).set_body_json(json!({
            "current_page": page, "data": data, "last_page": PAGES, "per_page": PER_PAGE,
            "total": PAGES * PER_PAGE, "next_page_url": next}))
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(method("GET"))
        .and(path("/order"))
        .respond_with(Orders)
        .mount(&server)
        .await;
    let client = Client::builder()
        .api_key("bench")
        .base_url(server.uri())
        .requests_per_minute(0)
        .build()
        .unwrap();
    let before = peak_rss_mib();
    let started = Instant::now();
    let (count, total) = client
        .order_list()
        .include("buyer,products.offer")
        .items()
        .try_fold((0u64, 0u64), |(n, sum), order| async move {
            Ok((n + 1, sum + order.id.unwrap_or(0) as u64))
        })
        .await
        .expect("streams");
    let elapsed = started.elapsed();
    assert_eq!(count, PAGES * PER_PAGE);
    assert_eq!(total, (1..=count).sum::<u64>(), "every id exactly once");
    println!(
        "(c) streamed {count} orders in {PAGES} pages in {:.1} s ({:.0} orders/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    println!(
        "    peak RSS before {before:.1} MiB, after {:.1} MiB (target < 64 MB)",
        peak_rss_mib()
    );
}
