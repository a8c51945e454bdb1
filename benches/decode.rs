//! Decode throughput of order pages: how fast the generated models read KeyCRM's JSON
//! (tolerant decimals and timestamps included), side by side with a bare `serde_json::Value`
//! parse of the same bytes.
//!
//! ```sh
//! cargo bench --bench decode
//! ```

use std::hint::black_box;
use std::time::Instant;

use keycrm::api::{Page, types};

fn order(id: usize) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "source_uuid": format!("WMS-{id}"),
        "source_id": 1,
        "status_id": 3,
        "grand_total": if id.is_multiple_of(2) { serde_json::json!("1249.50") } else { serde_json::json!(1249.5) },
        "total_discount": 0,
        "payment_status": "part_paid",
        "created_at": "2024-03-14T07:05:10.000000Z",
        "updated_at": "2024-03-14 09:15:00",
        "ordered_at": "2024-03-14T07:00:00.000000Z",
        "buyer": {"id": id, "full_name": "Олена Коваленко", "phone": "+380501234567", "email": "olena@example.com"},
        "products": [
            {"id": 1, "sku": "ART-001", "name": "Чай зелений", "price": "149.90", "quantity": 2.5,
             "offer": {"id": 11, "sku": "ART-001", "price": 149.9, "in_reserve": 1}},
            {"id": 2, "sku": "ART-002", "name": "Кава", "price": 320, "quantity": 1}
        ],
        "payments": [{"id": 7, "amount": "500.00", "status": "paid", "payment_date": "2024-03-14 07:10:00"}],
        "shipping": {"tracking_code": "20450000000000", "shipping_address_city": "Київ"},
        "unknown_live_field": {"nested": [1, 2, 3]}
    })
}

fn main() {
    let page = serde_json::json!({
        "current_page": 1, "data": (0..50).map(order).collect::<Vec<_>>(),
        "first_page_url": "https://openapi.keycrm.app/v1/order?page=1", "from": 1, "last_page": 20,
        "last_page_url": "https://openapi.keycrm.app/v1/order?page=20",
        "next_page_url": "https://openapi.keycrm.app/v1/order?page=2",
        "path": "https://openapi.keycrm.app/v1/order", "per_page": 50, "prev_page_url": null, "to": 50, "total": 1000
    });
    let bytes = serde_json::to_vec(&page).expect("serialisable");
    let rounds = 400;

    let typed = time(rounds, || {
        let page: Page<types::Order> = serde_json::from_slice(&bytes).expect("decodes");
        black_box(page.data.len());
    });
    let untyped = time(rounds, || {
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("parses");
        black_box(value);
    });

    let mb = bytes.len() as f64 / 1e6;
    println!("order page: 50 orders, {} bytes", bytes.len());
    println!(
        "typed   Page<Order>       {:>8.1} µs/page  {:>8.0} orders/s  {:>6.1} MB/s",
        typed * 1e6,
        50.0 / typed,
        mb / typed
    );
    println!(
        "untyped serde_json::Value {:>8.1} µs/page  {:>8.0} orders/s  {:>6.1} MB/s",
        untyped * 1e6,
        50.0 / untyped,
        mb / untyped
    );
    println!("ratio typed/untyped: {:.2}", typed / untyped);
}

/// Median seconds per call over `rounds` calls, after a warm-up.
fn time(rounds: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..rounds / 10 {
        f();
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
