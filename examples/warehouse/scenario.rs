//! The warehouse's own data and work: seeding, then scripted activity on both sides.

use futures::TryStreamExt;
use keycrm::Client;
use keycrm::api::Paginate;
use keycrm::api::mock::{KeyCrmMock, reference};
use keycrm::sync::canonical::{self, normalize_phone};
use rusqlite::params;

use crate::sql::Warehouse;

/// The warehouse codes and their KeyCRM ids (the simulator's warehouses).
pub const WAREHOUSES: [(&str, i64); 2] = [
    ("KYIV", reference::WAREHOUSE_KYIV),
    ("LVIV", reference::WAREHOUSE_LVIV),
];
/// Host status name -> KeyCRM status id, in the order a warehouse order moves.
pub const STATUSES: [(&str, i64); 6] = [
    ("new", reference::STATUS_NEW),
    ("approved", reference::STATUS_APPROVED),
    ("packing", reference::STATUS_PACKING),
    ("shipped", reference::STATUS_SHIPPED),
    ("completed", reference::STATUS_COMPLETED),
    ("canceled", reference::STATUS_CANCELED),
];
/// Host payment method name -> KeyCRM payment method id.
pub const PAYMENT_METHODS: [(&str, i64); 5] = [
    ("cod", reference::PAYMENT_COD),
    ("invoice", reference::PAYMENT_FOP_INVOICE),
    ("card", reference::PAYMENT_LIQPAY),
    ("apple_pay", reference::PAYMENT_APPLE_PAY),
    ("cash", reference::PAYMENT_CASH),
];

/// splitmix64: deterministic, so every run of the scenario does the same.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

const FIRST: [&str; 8] = [
    "Олена",
    "Андрій",
    "Ірина",
    "Тарас",
    "Марія",
    "Богдан",
    "Світлана",
    "Юрій",
];
const LAST: [&str; 8] = [
    "Коваль",
    "Бондар",
    "Шевчук",
    "Мельник",
    "Ткаченко",
    "Кравець",
    "Олійник",
    "Лисенко",
];
const GOODS: [&str; 6] = ["Чай", "Кава", "Мед", "Горіхи", "Сир", "Варення"];

/// How much of each the warehouse starts with.
pub struct Sizes {
    pub orders: usize,
    pub customers: usize,
    pub articles: usize,
}

/// Seeds the warehouse: some customers, products and articles copied from KeyCRM (so the
/// first sync links them), the rest its own; stock in both warehouses; orders.
pub async fn seed(wh: &Warehouse, crm: &Client, sizes: &Sizes) -> keycrm::Result<()> {
    let mut rng = Rng::new(7);
    let buyers: Vec<_> = crm.buyer_list().items().try_collect().await?;
    let products: Vec<_> = crm.product_list().items().try_collect().await?;
    let offers: Vec<_> = crm.offer_list().items().try_collect().await?;
    let conn = wh.conn();
    let insert_customer =
        |id: &str, name: &str, phone: Option<String>, email: Option<String>| {
            conn.execute(
            "INSERT OR IGNORE INTO customers (id, name, phones, emails) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, serde_json::json!(phone.into_iter().collect::<Vec<_>>()).to_string(),
                serde_json::json!(email.into_iter().collect::<Vec<_>>()).to_string()],
        )
        };
    // A fifth of the customers are already KeyCRM buyers (as KeyCRM has them): linked, not
    // duplicated.
    let linked = (sizes.customers / 5).min(buyers.len());
    for (i, b) in buyers.iter().take(linked).enumerate() {
        let fields = canonical::buyer_fields_from_remote(b);
        let mut customer =
            canonical::buyer_from_fields(format!("C-{i:04}"), &fields).expect("a KeyCRM buyer");
        customer.updated_at = None;
        let phones = serde_json::json!(customer.phones).to_string();
        let emails = serde_json::json!(customer.emails).to_string();
        conn.execute(
            "INSERT INTO customers (id, name, phones, emails, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                customer.local_id,
                customer.name,
                phones,
                emails,
                customer.note
            ],
        )
        .expect("seed customer");
    }
    for i in linked..sizes.customers {
        let name = format!("{} {}", FIRST[rng.below(8)], LAST[rng.below(8)]);
        insert_customer(
            &format!("C-{i:04}"),
            &name,
            normalize_phone(&format!("+38067{:07}", 1_000_000 + i)),
            Some(format!("customer{i}@warehouse.example")),
        )
        .expect("seed customer");
    }
    // A few KeyCRM products and their offers are in the warehouse already.
    let mut skus = Vec::new();
    for p in products.iter().filter(|p| p.sku.is_some()).take(10) {
        let sku = p.sku.clone().unwrap_or_default();
        conn.execute(
            "INSERT OR IGNORE INTO products (id, sku, name, price) VALUES (?1, ?2, ?3, ?4)",
            params![
                format!("P-{sku}"),
                sku,
                p.name,
                p.price.map(|d| d.to_string())
            ],
        )
        .expect("seed product");
        for o in offers.iter().filter(|o| o.product_id == p.id) {
            let Some(osku) = o.sku.clone() else { continue };
            conn.execute("INSERT OR IGNORE INTO articles (id, sku, product_sku, price) VALUES (?1, ?2, ?3, ?4)",
                params![format!("A-{osku}"), osku, sku, o.price.map(|d| d.to_string())]).expect("seed article");
            skus.push(osku);
        }
    }
    let mut n = 0;
    while skus.len() < sizes.articles {
        n += 1;
        let (sku, name) = (
            format!("WH-{n:04}"),
            format!("{} №{n}", GOODS[n % GOODS.len()]),
        );
        let price = format!("{}.{:02}", 20 + rng.below(900), rng.below(100));
        conn.execute(
            "INSERT INTO products (id, sku, name, price) VALUES (?1, ?2, ?3, ?4)",
            params![format!("P-{sku}"), sku, name, price],
        )
        .expect("seed product");
        // The engine creates products, not variants: an article of the warehouse's own is a
        // product of one offer with the same SKU.
        conn.execute(
            "INSERT INTO articles (id, sku, product_sku, price) VALUES (?1, ?2, ?2, ?3)",
            params![format!("A-{sku}"), sku, price],
        )
        .expect("seed article");
        skus.push(sku);
    }
    for sku in &skus {
        for (code, _) in WAREHOUSES {
            conn.execute(
                "INSERT OR IGNORE INTO stock VALUES (?1, ?2, ?3)",
                params![code, sku, (rng.below(200) + 20).to_string()],
            )
            .expect("seed stock");
        }
    }
    drop(conn);
    for i in 0..sizes.orders {
        new_order(wh, &mut rng, i, &skus);
    }
    Ok(())
}

/// A new order in the warehouse: a customer, one to three articles; some move on.
pub fn new_order(wh: &Warehouse, rng: &mut Rng, i: usize, skus: &[String]) -> String {
    let conn = wh.conn();
    let id = format!("WH-{i:06}");
    let customers: i64 = conn
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .expect("count");
    let (name, phone): (String, String) = conn
        .query_row(
            "SELECT name, json_extract(phones, '$[0]') FROM customers LIMIT 1 OFFSET ?1",
            [rng.below(customers as usize) as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            },
        )
        .expect("a customer");
    let status = STATUSES[rng.below(3)].0;
    conn.execute(
        "INSERT INTO orders (id, number, status, customer_name, customer_phone, ordered_at, updated_at) \
         VALUES (?1, ?1, ?2, ?3, ?4, datetime('now'), datetime('now'))",
        params![id, status, name, phone],
    )
    .expect("insert order");
    let mut used = Vec::new();
    for position in 0..1 + rng.below(3) {
        let sku = &skus[rng.below(skus.len())];
        if used.contains(sku) {
            continue;
        }
        used.push(sku.clone());
        let price: String = conn
            .query_row(
                "SELECT coalesce(price, '100') FROM articles WHERE sku = ?1",
                [sku],
                |r| r.get(0),
            )
            .expect("article price");
        conn.execute(
            "INSERT INTO order_lines VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                position as i64,
                sku,
                format!("Товар {sku}"),
                (1 + rng.below(3)).to_string(),
                price
            ],
        )
        .expect("insert line");
    }
    id
}

/// The warehouse records a payment of an order's total.
pub fn pay(wh: &Warehouse, order: &str, method: &str) {
    let conn = wh.conn();
    conn.execute(
        "INSERT INTO payments SELECT ?1, (SELECT count(*) FROM payments WHERE order_id = ?1), ?2, \
         (SELECT printf('%.2f', sum(quantity * price)) FROM order_lines WHERE order_id = ?1), 'paid', NULL",
        params![order, method],
    )
    .expect("insert payment");
}

/// The warehouse ships an order: status, carrier and tracking code.
pub fn ship(wh: &Warehouse, order: &str, tracking: &str) {
    let conn = wh.conn();
    conn.execute(
        "UPDATE orders SET status = 'shipped', updated_at = datetime('now') WHERE id = ?1",
        [order],
    )
    .expect("ship order");
    conn.execute(
        "INSERT OR REPLACE INTO shipping (order_id, tracking_code, carrier_id, city) VALUES (?1, ?2, 1, 'Київ')",
        params![order, tracking],
    )
    .expect("insert shipping");
}

/// A stock movement in the warehouse (`delta` may be negative; never below zero).
pub fn move_stock(wh: &Warehouse, warehouse: &str, sku: &str, delta: i64) {
    wh.conn()
        .execute(
            "UPDATE stock SET quantity = max(0, CAST(quantity AS INTEGER) + ?3) WHERE warehouse = ?1 AND sku = ?2",
            params![warehouse, sku, delta],
        )
        .expect("move stock");
}

/// KeyCRM's id of the order with this number (`source_uuid`), if it is there yet.
pub fn remote_order(mock: &KeyCrmMock, number: &str) -> Option<i64> {
    mock.crm().order_ids().into_iter().find(|id| {
        mock.crm()
            .order(*id)
            .is_some_and(|o| o["source_uuid"].as_str() == Some(number))
    })
}

#[derive(serde::Deserialize)]
struct Text {
    value: String,
}

fn texts(wh: &Warehouse, query: &str) -> Vec<String> {
    wh.rows::<Text>(query, &[])
        .expect("warehouse query")
        .into_iter()
        .map(|t| t.value)
        .collect()
}

/// What the scripted activity did.
#[derive(Default)]
pub struct Activity {
    created: u32,
    paid: u32,
    shipped: u32,
    stock_moves: u32,
    crm_status: u32,
    crm_payments: u32,
    conflict_on: Option<String>,
    retried: usize,
}

impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "warehouse: {} orders created, {} paid, {} shipped, {} stock moves; KeyCRM: {} status \
             changes, {} payments (by webhook); conflict staged on {}; {} dead letters retried",
            self.created,
            self.paid,
            self.shipped,
            self.stock_moves,
            self.crm_status,
            self.crm_payments,
            self.conflict_on.as_deref().unwrap_or("-"),
            self.retried
        )
    }
}

/// An article KeyCRM does not know: its stock row is refused (a dead letter, an alert) until
/// the warehouse adds the article and the dead letter is retried.
const GHOST_SKU: &str = "WH-GHOST-1";

/// Scripted work on both sides for `duration`, while the engine runs.
pub async fn activity<S: keycrm::sync::store::Store>(
    wh: &Warehouse,
    mock: &KeyCrmMock,
    service: &keycrm::sync::http::Service<S, crate::Host>,
    duration: std::time::Duration,
) -> Activity {
    let mut rng = Rng::new(11);
    let mut done = Activity::default();
    let skus = texts(wh, "SELECT sku AS value FROM articles");
    let mut next = texts(wh, "SELECT id AS value FROM orders WHERE id LIKE 'WH-%'").len();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    let mut step = 0;
    loop {
        tick.tick().await;
        let share = start.elapsed().as_secs_f64() / duration.as_secs_f64();
        if share >= 1.0 {
            break;
        }
        // Milestones, once each: an unknown SKU, a fault burst, a conflict (by time); then,
        // once the refused stock row is a dead letter (or late in the run), the warehouse adds
        // the article and the operator retries the dead letter.
        let mut milestone = [0.1, 0.3, 0.4].iter().filter(|m| share >= **m).count();
        if step >= 3 {
            let dead = service.dead_letters().await.unwrap_or_default();
            milestone = match step {
                3 if !dead.is_empty() || share >= 0.8 => 4,
                4 if !dead.is_empty() => 5,
                _ => step,
            };
        }
        while step < milestone {
            step += 1;
            match step {
                1 => {
                    println!(
                        "  the warehouse counts stock of {GHOST_SKU}, an article KeyCRM does not know"
                    );
                    wh.conn()
                        .execute("INSERT INTO stock VALUES ('KYIV', ?1, '7')", [GHOST_SKU])
                        .expect("ghost stock");
                }
                2 => {
                    println!("  KeyCRM answers a burst of 429 and 503");
                    mock.faults().fail_next(6, 429);
                    mock.faults().fail_next(3, 503);
                }
                3 => {
                    // The same order's comment edited on both sides before the next run.
                    let order = "WH-000010";
                    if let Some(remote) = remote_order(mock, order) {
                        println!(
                            "  {order}: comment edited in KeyCRM and in the warehouse at once"
                        );
                        mock.crm().edit_order(
                            remote,
                            serde_json::json!({"manager_comment": "CRM: call before delivery"}),
                        );
                        wh.conn()
                            .execute(
                                "UPDATE orders SET comment = 'Warehouse: fragile' WHERE id = ?1",
                                [order],
                            )
                            .expect("edit comment");
                        done.conflict_on = Some(order.into());
                    }
                }
                4 => {
                    println!("  the warehouse adds the article {GHOST_SKU}");
                    let conn = wh.conn();
                    conn.execute("INSERT INTO products (id, sku, name, price) VALUES ('P-GHOST', ?1, 'Новинка', '10')", [GHOST_SKU])
                        .expect("ghost product");
                    conn.execute("INSERT INTO articles (id, sku, product_sku, price) VALUES ('A-GHOST', ?1, ?1, '10')", [GHOST_SKU])
                        .expect("ghost article");
                }
                _ => done.retried += retry_dead_letters(service).await,
            }
        }
        match rng.below(6) {
            0 => {
                new_order(wh, &mut rng, next, &skus);
                next += 1;
                done.created += 1;
            }
            1 => {
                let unpaid = texts(
                    wh,
                    "SELECT id AS value FROM orders o WHERE id LIKE 'WH-%' AND NOT EXISTS \
                                        (SELECT 1 FROM payments p WHERE p.order_id = o.id) LIMIT 50",
                );
                if !unpaid.is_empty() {
                    pay(wh, &unpaid[rng.below(unpaid.len())], PAYMENT_METHODS[2].0);
                    done.paid += 1;
                }
            }
            2 => {
                let open = texts(
                    wh,
                    "SELECT id AS value FROM orders WHERE id LIKE 'WH-%' AND status IN ('approved', 'packing') LIMIT 50",
                );
                if !open.is_empty() {
                    let order = &open[rng.below(open.len())];
                    ship(wh, order, &format!("2040{:010}", rng.below(1_000_000_000)));
                    done.shipped += 1;
                }
            }
            3 => {
                let sku = &skus[rng.below(skus.len())];
                move_stock(
                    wh,
                    WAREHOUSES[rng.below(2)].0,
                    sku,
                    rng.below(20) as i64 - 8,
                );
                done.stock_moves += 1;
            }
            4 => {
                let ids = mock.crm().order_ids();
                let id = ids[rng.below(ids.len())];
                let status = mock
                    .crm()
                    .order(id)
                    .and_then(|o| o["status_id"].as_i64())
                    .unwrap_or(1);
                if status < reference::STATUS_SHIPPED {
                    mock.crm().set_order_status(id, status + 1);
                    done.crm_status += 1;
                }
            }
            _ => {
                let ids = mock.crm().order_ids();
                let id = ids[rng.below(ids.len())];
                let Some(order) = mock.crm().order(id) else {
                    continue;
                };
                let total = order["grand_total"]
                    .to_string()
                    .trim_matches('"')
                    .parse::<keycrm::api::Decimal>();
                if let (Ok(total), Some("not_paid")) = (total, order["payment_status"].as_str())
                    && total.value() > Default::default()
                {
                    mock.crm().add_order_payment(id, total, "paid");
                    done.crm_payments += 1;
                }
            }
        }
    }
    // Whatever is still dead-lettered (the article is there now) gets one more try.
    if step >= 4 {
        done.retried += retry_dead_letters(service).await;
    }
    done
}

/// The operator's "retry" on every dead letter; how many were queued again.
async fn retry_dead_letters<S: keycrm::sync::store::Store>(
    service: &keycrm::sync::http::Service<S, crate::Host>,
) -> usize {
    let mut retried = 0;
    for letter in service.dead_letters().await.unwrap_or_default() {
        if service.retry_dead_letter(letter.id.0).await.is_ok() {
            retried += 1;
        }
    }
    if retried > 0 {
        println!("  the operator retries {retried} dead letters");
    }
    retried
}
