//! The simulated account: reference data, records, the clock and the webhook events that
//! changes produce.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::model::*;
use super::wire::{self, Time};
use crate::clock::Clock;

/// A webhook KeyCRM would send because of a change.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// An automation-trigger webhook: `{"event": ..., "context": ...}`.
    Trigger { event: &'static str, context: Value },
    /// A stock-balance webhook: a bare array of `{offer_id, sku, in_stock, in_reserve}`.
    Stock(Vec<Value>),
}

/// The rules of an order status that matter for stock.
#[derive(Clone, Debug)]
pub(crate) struct StatusDef {
    pub id: i64,
    pub group_id: i64,
    pub is_closing_order: bool,
    /// Orders in this status hold a reserve on their catalogue lines.
    pub reserves: bool,
    /// Moving an order into this status writes its goods off the warehouse.
    pub writes_off: bool,
    pub row: Value,
}

/// Per-table id counters, starting where a lived-in account might be.
#[derive(Clone, Debug)]
pub(crate) struct Ids {
    pub order: i64,
    pub line: i64,
    pub payment: i64,
    pub expense: i64,
    pub buyer: i64,
    pub company: i64,
    pub product: i64,
    pub offer: i64,
    pub category: i64,
    pub file: i64,
    pub card: i64,
    pub card_line: i64,
    pub contact: i64,
    pub transaction: i64,
    pub call: i64,
    pub payment_method: i64,
    pub expense_type: i64,
}

impl Default for Ids {
    fn default() -> Self {
        Self {
            order: 10_001,
            line: 60_001,
            payment: 5_001,
            expense: 7_001,
            buyer: 2_001,
            company: 101,
            product: 3_001,
            offer: 8_001,
            category: 11,
            file: 901,
            card: 401,
            card_line: 20_001,
            contact: 1_201,
            transaction: 4_501,
            call: 3_301,
            payment_method: 6,
            expense_type: 4,
        }
    }
}

/// Takes the next id of a counter.
pub(crate) fn take(counter: &mut i64) -> i64 {
    let id = *counter;
    *counter += 1;
    id
}

/// The whole simulated account.
#[derive(Debug)]
pub(crate) struct State {
    last_time: Time,
    /// Where the account's time comes from (`None`: the system's time).
    clock: Option<Arc<dyn Clock>>,
    pub ids: Ids,
    pub leads_enabled: bool,
    pub statuses: Vec<StatusDef>,
    pub sources: Vec<Value>,
    pub payment_methods: Vec<Value>,
    pub expense_types: Vec<Value>,
    pub delivery_services: Vec<Value>,
    pub product_statuses: Vec<Value>,
    pub tags: Vec<Value>,
    pub users: Vec<Value>,
    pub warehouses: Vec<Value>,
    pub custom_fields: Vec<Value>,
    pub pipelines: Vec<Value>,
    pub pipeline_statuses: Vec<Value>,
    pub call_services: Vec<Value>,
    pub calls: Vec<Value>,
    pub orders: BTreeMap<i64, Order>,
    pub payments: BTreeMap<i64, Payment>,
    pub buyers: BTreeMap<i64, Buyer>,
    pub companies: BTreeMap<i64, Company>,
    pub products: BTreeMap<i64, Product>,
    pub offers: BTreeMap<i64, Offer>,
    pub categories: BTreeMap<i64, Category>,
    /// Balance per (offer, warehouse).
    pub stock: BTreeMap<(i64, i64), Decimal>,
    pub files: BTreeMap<i64, File>,
    pub cards: BTreeMap<i64, Card>,
    pub contacts: BTreeMap<i64, Contact>,
    pub transactions: BTreeMap<i64, Transaction>,
    /// Webhooks produced by the current change, drained by the server.
    pub events: Vec<Event>,
}

/// When the simulated account was set up; reference data carries this time.
fn account_created() -> Time {
    wire::parse_time("2022-11-03 09:41:12").expect("a valid constant")
}

/// Finds a reference row by id.
pub(crate) fn row(rows: &[Value], id: i64) -> Option<&Value> {
    rows.iter().find(|r| r["id"].as_i64() == Some(id))
}

/// Finds a reference row by name (case-insensitive).
pub(crate) fn row_by_name<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
    let name = name.trim().to_lowercase();
    rows.iter()
        .find(|r| r["name"].as_str().map(str::to_lowercase).as_deref() == Some(&name))
}

impl State {
    /// A new account holding only reference data, whose time comes from `clock` (the
    /// system's time without one).
    pub fn new(leads_enabled: bool, clock: Option<Arc<dyn Clock>>) -> Self {
        let t = wire::iso(account_created());
        let ts = wire::sql(account_created());
        let status = |id: i64,
                      name: &str,
                      alias: &str,
                      group: i64,
                      closing: bool,
                      reserves,
                      writes_off| {
            StatusDef {
                id,
                group_id: group,
                is_closing_order: closing,
                reserves,
                writes_off,
                row: json!({
                    "id": id, "name": name, "alias": alias, "is_active": true, "group_id": group,
                    "is_closing_order": closing, "is_reserved": id == 1 || closing,
                    "expiration_period": if id == 1 { Value::from(86_400) } else { Value::Null },
                    "created_at": t, "updated_at": t, "deleted_at": null,
                }),
            }
        };
        let statuses = vec![
            status(1, "Новий", "new", 1, false, false, false),
            status(2, "Погоджено", "approved", 2, false, true, false),
            status(3, "Комплектується", "packing", 2, false, true, false),
            status(4, "Відправлено", "shipped", 4, false, false, true),
            status(5, "Виконано", "completed", 5, true, false, true),
            status(6, "Скасовано", "canceled", 6, true, false, false),
        ];
        let source = |id: i64, name: &str, alias: &str, driver: &str, shop: Option<&str>| {
            json!({
                "id": id, "name": name, "alias": alias, "driver": driver, "source_uuid": null,
                "source_name": shop, "currency_code": "UAH", "created_at": t, "updated_at": t,
            })
        };
        let sources = vec![
            source(
                1,
                "Інтернет-магазин",
                "website",
                "opencart",
                Some("tekhnomarket.ua"),
            ),
            source(
                2,
                "Rozetka",
                "rozetka",
                "rozetka",
                Some("Rozetka Маркетплейс"),
            ),
            source(3, "Prom.ua", "promua", "promua", Some("Prom.ua")),
            source(4, "Instagram", "instagram", "other", None),
            source(5, "Телефон", "phone", "other", None),
        ];
        let method = |id: i64, name: &str, alias: &str| json!({ "id": id, "name": name, "alias": alias, "is_active": true });
        let payment_methods = vec![
            method(1, "Накладений платіж", "cod"),
            method(2, "Оплата на рахунок ФОП", "fop_invoice"),
            method(3, "Картка онлайн (LiqPay)", "liqpay"),
            method(4, "Apple Pay", "apple_pay"),
            method(5, "Готівка", "cash"),
        ];
        let expense = |id: i64, name: &str, alias: &str| {
            json!({ "id": id, "name": name, "alias": alias, "is_active": true,
                    "is_reserved": id == 1, "by_order": true })
        };
        let expense_types = vec![
            expense(1, "Доставка", "delivery"),
            expense(2, "Пакування", "packaging"),
            expense(3, "Комісія маркетплейсу", "marketplace_commission"),
        ];
        let delivery = |id: i64, name: &str, alias: &str, carrier: &str| json!({ "id": id, "name": name, "source_name": carrier, "alias": alias });
        let delivery_services = vec![
            delivery(1, "Нова Пошта", "novaposhta", "Nova Poshta"),
            delivery(2, "Укрпошта", "ukrposhta", "Ukrposhta"),
            delivery(3, "Meest ПОШТА", "meest", "Meest"),
            delivery(4, "Самовивіз", "pickup", "pickup"),
        ];
        let pstatus = |id: i64, name: &str, alias: &str| {
            json!({ "id": id, "name": name, "alias": alias, "position": id, "is_active": true,
                    "is_reserved": id <= 2, "created_at": t, "updated_at": t })
        };
        let product_statuses = vec![
            pstatus(1, "Новий", "new"),
            pstatus(2, "Зарезервовано", "reserved"),
            pstatus(3, "Відвантажено", "shipped"),
            pstatus(4, "Повернуто", "returned"),
        ];
        let tag = |id: i64, name: &str, alias: &str, color: &str| {
            json!({ "id": id, "name": name, "alias": alias, "color": color,
                    "created_at": ts, "updated_at": ts })
        };
        let tags = vec![
            tag(1, "VIP", "vip", "#F59F00"),
            tag(2, "Терміново", "urgent", "#E03131"),
            tag(3, "Крупногабарит", "oversize", "#1C7ED6"),
            tag(4, "Опт", "wholesale", "#2F9E44"),
            tag(5, "Повернення", "return", "#868E96"),
        ];
        let user = |id: i64,
                    first: &str,
                    last: &str,
                    login: &str,
                    phone: &str,
                    role: i64,
                    status: &str| {
            json!({
                "id": id, "first_name": first, "last_name": last,
                "full_name": format!("{first} {last}"), "username": login,
                "email": format!("{login}@tekhnomarket.ua"), "phone": phone, "role_id": role,
                "status": status, "created_at": t, "updated_at": t,
                "last_logged_at": "2024-05-17 07:58:12",
            })
        };
        let users = vec![
            user(
                1,
                "Андрій",
                "Шевчук",
                "a.shevchuk",
                "+380501112233",
                1,
                "active",
            ),
            user(
                2,
                "Олена",
                "Мельник",
                "o.melnyk",
                "+380672223344",
                2,
                "active",
            ),
            user(
                3,
                "Ігор",
                "Бондар",
                "i.bondar",
                "+380633334455",
                2,
                "active",
            ),
            user(
                4,
                "Світлана",
                "Лисенко",
                "s.lysenko",
                "+380934445566",
                3,
                "blocked",
            ),
        ];
        let warehouses = vec![
            json!({ "id": 1, "name": "Основний склад (Київ)", "description": null, "is_active": true }),
            json!({ "id": 2, "name": "Склад Львів", "description": "Відвантаження по заходу", "is_active": true }),
        ];
        let field = |id: i64, uuid: &str, name: &str, model: &str, kind: &str, options: &[&str]| {
            let options: Vec<Value> = options
                .iter()
                .enumerate()
                .map(|(i, v)| json!({ "id": id * 10 + i as i64, "field_id": id, "value": v }))
                .collect();
            json!({
                "id": id, "name": name, "uuid": uuid, "model": model, "type": kind,
                "required": false, "position": id, "is_multiple": kind == "select" && id == 1,
                "options": options,
            })
        };
        let custom_fields = vec![
            field(
                1,
                "OR_1001",
                "Спосіб зв'язку",
                "order",
                "select",
                &["Телефон", "Viber", "Telegram"],
            ),
            field(2, "OR_1002", "Код ЄДРПОУ", "order", "text", &[]),
            field(3, "OR_1003", "Знижка менеджера, %", "order", "float", &[]),
            field(
                4,
                "CT_1001",
                "Звідки дізнався",
                "client",
                "select",
                &["Instagram", "Рекомендація", "Реклама"],
            ),
            field(5, "CT_1002", "Матеріал", "crm_product", "text", &[]),
            field(6, "LD_1001", "Бюджет", "lead", "number", &[]),
            field(7, "CY_1001", "ІПН", "company", "text", &[]),
        ];
        let pipelines = vec![
            json!({ "id": 1, "name": "Вхідні заявки", "target_type": "lead_pipeline", "target_id": null,
                    "use_payments": false, "lead_type": "request" }),
            json!({ "id": 2, "name": "Оптові продажі", "target_type": "lead_pipeline", "target_id": null,
                    "use_payments": true, "lead_type": "deal" }),
        ];
        let stage = |id: i64,
                     pipeline: i64,
                     title: &str,
                     alias: &str,
                     color: &str,
                     is_final: bool| {
            json!({ "id": id, "pipeline_id": pipeline, "title": title, "name": title, "alias": alias,
                    "color": color, "is_final": is_final, "is_active": true,
                    "created_at": t, "updated_at": t })
        };
        let pipeline_statuses = vec![
            stage(1, 1, "Нова заявка", "new", "#69DB7C", false),
            stage(2, 1, "В роботі", "in_progress", "#4DABF7", false),
            stage(3, 1, "Успішно", "success", "#40C057", true),
            stage(4, 1, "Відмова", "failed", "#FA5252", true),
            stage(5, 2, "Перемовини", "negotiation", "#69DB7C", false),
            stage(6, 2, "Рахунок виставлено", "invoiced", "#FAB005", false),
            stage(7, 2, "Оплачено", "paid", "#40C057", true),
            stage(8, 2, "Втрачено", "lost", "#FA5252", true),
        ];
        let call_services = vec![json!({
            "id": 1, "name": "Ringostat", "alias": "ringostat", "service": "ringostat",
            "uuid": "rs-7f3a9c", "is_active": true, "configuraion": {}, "created_at": t,
            "updated_at": t, "deleted_at": null,
        })];
        Self {
            last_time: account_created(),
            clock,
            ids: Ids::default(),
            leads_enabled,
            statuses,
            sources,
            payment_methods,
            expense_types,
            delivery_services,
            product_statuses,
            tags,
            users,
            warehouses,
            custom_fields,
            pipelines,
            pipeline_statuses,
            call_services,
            calls: Vec::new(),
            orders: BTreeMap::new(),
            payments: BTreeMap::new(),
            buyers: BTreeMap::new(),
            companies: BTreeMap::new(),
            products: BTreeMap::new(),
            offers: BTreeMap::new(),
            categories: BTreeMap::new(),
            stock: BTreeMap::new(),
            files: BTreeMap::new(),
            cards: BTreeMap::new(),
            contacts: BTreeMap::new(),
            transactions: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// The current time, strictly later than any time handed out before, so that every
    /// write moves `updated_at` forward.
    pub fn now(&mut self) -> Time {
        let mut t = wire::now(self.clock.as_deref());
        if t <= self.last_time {
            t = self.last_time + chrono::Duration::microseconds(1);
        }
        self.last_time = t;
        t
    }

    pub fn status(&self, id: i64) -> Option<&StatusDef> {
        self.statuses.iter().find(|s| s.id == id)
    }

    pub fn user(&self, id: i64) -> Option<&Value> {
        row(&self.users, id)
    }

    /// Whether a custom field with this uuid exists for `model`.
    pub fn custom_field_known(&self, model: &str, uuid: &str) -> bool {
        self.custom_fields
            .iter()
            .any(|f| f["uuid"] == uuid && f["model"] == model)
    }

    /// Values of custom fields as KeyCRM returns them (`id, uuid, name, type, value`).
    pub fn render_custom_fields(&self, values: &[(String, Value)]) -> Value {
        Value::Array(
            values
                .iter()
                .filter_map(|(uuid, value)| {
                    let def = self
                        .custom_fields
                        .iter()
                        .find(|f| f["uuid"] == uuid.as_str())?;
                    Some(json!({
                        "id": def["id"], "uuid": uuid, "name": def["name"], "type": def["type"],
                        "value": value,
                    }))
                })
                .collect(),
        )
    }

    /// Sets custom field values, replacing earlier values of the same fields.
    pub fn merge_custom_fields(target: &mut Vec<(String, Value)>, values: Vec<(String, Value)>) {
        for (uuid, value) in values {
            match target.iter_mut().find(|(u, _)| *u == uuid) {
                Some(existing) => existing.1 = value,
                None => target.push((uuid, value)),
            }
        }
    }

    /// The reserve held on each (offer, warehouse) by orders in reserving statuses.
    pub fn reserves(&self) -> HashMap<(i64, i64), Decimal> {
        let mut out = HashMap::new();
        for order in self.orders.values() {
            if !self.status(order.status_id).is_some_and(|s| s.reserves) {
                continue;
            }
            for line in &order.lines {
                if let (Some(offer), Some(wh)) = (line.offer_id, line.warehouse_id) {
                    *out.entry((offer, wh)).or_default() += line.quantity;
                }
            }
        }
        out
    }

    /// Total balance and reserve of an offer over all warehouses.
    pub fn stock_totals(
        &self,
        offer_id: i64,
        reserves: &HashMap<(i64, i64), Decimal>,
    ) -> (Decimal, Decimal) {
        let in_stock = self
            .stock
            .range((offer_id, i64::MIN)..=(offer_id, i64::MAX))
            .map(|(_, q)| *q)
            .sum();
        let in_reserve = reserves
            .iter()
            .filter(|((o, _), _)| *o == offer_id)
            .map(|(_, q)| *q)
            .sum();
        (in_stock, in_reserve)
    }

    /// Balance and reserve of the given offers, to compare before and after a change.
    pub fn stock_snapshot(&self, offers: &[i64]) -> Vec<(i64, Decimal, Decimal)> {
        let reserves = self.reserves();
        offers
            .iter()
            .map(|&id| {
                let (q, r) = self.stock_totals(id, &reserves);
                (id, q, r)
            })
            .collect()
    }

    /// Queues a stock webhook for the offers whose balance or reserve differs from `before`.
    pub fn emit_stock_changes(&mut self, before: &[(i64, Decimal, Decimal)]) {
        let ids: Vec<i64> = before.iter().map(|(id, _, _)| *id).collect();
        let after = self.stock_snapshot(&ids);
        let rows: Vec<Value> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(_, (id, q, r))| {
                let sku = self.offers.get(id).and_then(|o| o.sku.clone());
                json!({ "offer_id": id, "sku": sku, "in_stock": wire::num(*q),
                        "in_reserve": wire::num(*r) })
            })
            .collect();
        if !rows.is_empty() {
            self.events.push(Event::Stock(rows));
        }
    }

    /// The catalogue offers an order's lines point at.
    pub fn order_offer_ids(&self, order_id: i64) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .orders
            .get(&order_id)
            .map(|o| o.lines.iter().filter_map(|l| l.offer_id).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The first offer with this SKU.
    pub fn offer_by_sku(&self, sku: &str) -> Option<&Offer> {
        self.offers.values().find(|o| o.sku.as_deref() == Some(sku))
    }

    /// Finds the buyer with one of these contacts (phone digits or e-mail, case-insensitive).
    pub fn find_buyer(&self, phone: Option<&str>, email: Option<&str>) -> Option<i64> {
        let digits = phone.map(wire::phone_digits).filter(|d| !d.is_empty());
        let email = email
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty());
        self.buyers
            .values()
            .find(|b| {
                digits
                    .as_ref()
                    .is_some_and(|d| b.phone.iter().any(|p| wire::phone_digits(p) == *d))
                    || email
                        .as_ref()
                        .is_some_and(|e| b.email.iter().any(|x| x.to_lowercase() == *e))
            })
            .map(|b| b.id)
    }
}
