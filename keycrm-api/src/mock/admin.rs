//! The admin API under `/__mock/`: lets a test in any language drive a running simulator
//! (reset, seed, changes made "in the CRM", faults, webhook receivers, the request log).
//!
//! Admin requests need no API key, use no quota, get no faults and are not recorded. Bodies
//! and answers are JSON; errors are `{"message": ...}` with 400 (bad body), 404 (unknown
//! path or record), 405 (known path, other method) or 422 (a change KeyCRM would refuse).

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use wiremock::{Request, ResponseTemplate};

use super::http::ApiError;
use super::quota::{Quota, Throttle};
use super::seed::{self, SeedConfig, Seeded};
use super::server::{Shared, json_response};
use super::state::{self, State};
use super::wire;
use super::{RecordedRequest, WebhookDelivery, catalog, orders, pipelines};

/// An admin answer: status and optional JSON body.
type Answer = Result<(u16, Option<Value>), (u16, String)>;

/// Every admin route: method, path below `/__mock` (`{}` is an id), what it does.
pub(crate) const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/reference"),
    ("POST", "/reset"),
    ("POST", "/seed"),
    ("GET", "/requests"),
    ("DELETE", "/requests"),
    ("GET", "/webhooks"),
    ("POST", "/webhooks"),
    ("PUT", "/orders/{}/status"),
    ("PUT", "/orders/{}"),
    ("POST", "/orders/{}/payments"),
    ("PUT", "/cards/{}/status"),
    ("PUT", "/stock"),
    ("PUT", "/faults"),
    ("DELETE", "/faults"),
    ("PUT", "/leads"),
    ("PUT", "/quota"),
];

/// Answers an admin request; `path` is below `/__mock` (`/reset`).
pub(crate) fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    request: &Request,
) -> ResponseTemplate {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let known: Vec<&str> = ADMIN_ROUTES
        .iter()
        .filter(|(_, pattern)| fits(pattern, &segments))
        .map(|(m, _)| *m)
        .collect();
    let answer = if known.is_empty() {
        Err((404, format!("No admin route {path}")))
    } else if !known.contains(&method) {
        Err((
            405,
            format!(
                "The {method} method is not supported for {path}. Supported methods: {}.",
                known.join(", ")
            ),
        ))
    } else {
        route(shared, method, &segments, &request.body)
    };
    match answer {
        Ok((status, Some(body))) => json_response(status, &body),
        Ok((status, None)) => ResponseTemplate::new(status),
        Err((status, message)) => json_response(status, &json!({ "message": message })),
    }
}

fn fits(pattern: &str, segments: &[&str]) -> bool {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    pattern.len() == segments.len()
        && pattern
            .iter()
            .zip(segments)
            .all(|(p, s)| *p == "{}" && !s.is_empty() || p == s)
}

fn route(shared: &Shared, method: &str, segments: &[&str], body: &[u8]) -> Answer {
    match (method, segments) {
        ("GET", ["health"]) => Ok((200, Some(json!({ "status": "ok" })))),
        ("GET", ["reference"]) => Ok((200, Some(reference(&shared.lock().state)))),
        ("POST", ["reset"]) => {
            shared.reset();
            Ok((204, None))
        }
        ("POST", ["seed"]) => {
            let config = seed_config(&parse(body, true)?)?;
            let seeded = seed::seed(&mut shared.lock().state, &config);
            Ok((201, Some(seeded_json(&seeded))))
        }
        ("GET", ["requests"]) => {
            let log: Vec<Value> = shared.lock().log.iter().map(request_json).collect();
            Ok((200, Some(Value::Array(log))))
        }
        ("DELETE", ["requests"]) => {
            let mut inner = shared.lock();
            inner.log.clear();
            inner.throttle.rejected = 0;
            Ok((204, None))
        }
        ("GET", ["webhooks"]) => {
            let log: Vec<Value> = shared.hooks.log().iter().map(delivery_json).collect();
            Ok((200, Some(Value::Array(log))))
        }
        ("POST", ["webhooks"]) => {
            let body = parse(body, false)?;
            let url = str_field(&body, "url")?
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .ok_or((422, "`url` (http:// or https://) is required".to_string()))?
                .to_string();
            let mut inner = shared.lock();
            match body.get("kind").and_then(Value::as_str).unwrap_or("order") {
                "order" => inner.trigger_hooks.push(url),
                "stock" => inner.stock_hooks.push(url),
                other => {
                    return Err((422, format!("`kind` is `order` or `stock`, not `{other}`")));
                }
            }
            Ok((201, Some(receivers_json(&inner))))
        }
        ("PUT", ["orders", id, "status"]) => {
            let id = path_id(id)?;
            let body = parse(body, false)?;
            let status = int_field(&body, "status_id")?
                .ok_or((422, "`status_id` is required".to_string()))?;
            change_order(shared, id, &json!({ "status_id": status }))
        }
        ("PUT", ["orders", id]) => {
            let id = path_id(id)?;
            change_order(shared, id, &parse(body, false)?)
        }
        ("POST", ["orders", id, "payments"]) => {
            let id = path_id(id)?;
            let body = parse(body, false)?;
            let amount =
                decimal_field(&body, "amount")?.ok_or((422, "`amount` is required".to_string()))?;
            let payment = orders::NewPayment {
                method: orders::MethodRef::Id(int_field(&body, "payment_method_id")?.unwrap_or(1)),
                amount,
                status: str_field(&body, "status")?.unwrap_or("paid").to_string(),
                description: str_field(&body, "description")?.map(str::to_string),
                payment_date: None,
            };
            let payment_id = change(shared, |state| {
                orders::mutate(state, id, |state, now| {
                    Ok(orders::insert_payment(
                        state,
                        super::model::Destination::Order(id),
                        &payment,
                        now,
                    ))
                })
            })?;
            Ok((201, Some(json!({ "id": payment_id, "order_id": id }))))
        }
        ("PUT", ["cards", id, "status"]) => {
            let id = path_id(id)?;
            let body = parse(body, false)?;
            let status = int_field(&body, "status_id")?
                .ok_or((422, "`status_id` is required".to_string()))?;
            change(shared, |state| {
                pipelines::update_card(state, id, &json!({ "status_id": status }))
            })?;
            let inner = shared.lock();
            let card = inner
                .state
                .cards
                .get(&id)
                .map(|c| pipelines::card_record(&inner.state, c));
            Ok((200, card))
        }
        ("PUT", ["stock"]) => {
            let body = parse(body, false)?;
            let offer =
                int_field(&body, "offer_id")?.ok_or((422, "`offer_id` is required".to_string()))?;
            let warehouse = int_field(&body, "warehouse_id")?
                .ok_or((422, "`warehouse_id` is required".to_string()))?;
            let quantity = decimal_field(&body, "quantity")?
                .ok_or((422, "`quantity` is required".to_string()))?;
            change(shared, |state| {
                if !state.offers.contains_key(&offer) {
                    return Err(ApiError::not_found("Offer", offer));
                }
                if state::row(&state.warehouses, warehouse).is_none() {
                    return Err(ApiError::not_found("Warehouse", warehouse));
                }
                catalog::set_stock(state, warehouse, &[(offer, quantity)]);
                let (in_stock, in_reserve) = state.stock_totals(offer, &state.reserves());
                Ok(json!({ "offer_id": offer, "in_stock": wire::num(in_stock), "in_reserve": wire::num(in_reserve) }))
            })
            .map(|body| (200, Some(body)))
        }
        ("PUT", ["faults"]) => set_faults(shared, &parse(body, false)?),
        ("DELETE", ["faults"]) => {
            shared.lock().faults.clear();
            Ok((204, None))
        }
        ("PUT", ["leads"]) => {
            let body = parse(body, false)?;
            let enabled = body
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or((422, "`enabled` (true or false) is required".to_string()))?;
            shared.lock().state.leads_enabled = enabled;
            Ok((200, Some(json!({ "enabled": enabled }))))
        }
        ("PUT", ["quota"]) => {
            let body = parse(body, false)?;
            let limit = int_field(&body, "limit")?
                .ok_or((422, "`limit` is required (0: unlimited)".to_string()))?;
            let limit =
                u32::try_from(limit).map_err(|_| (422, "`limit` is 0 or more".to_string()))?;
            let window = int_field(&body, "window_secs")?.unwrap_or(60).max(1);
            let quota = if limit == 0 {
                Quota::unlimited()
            } else {
                Quota::new(limit, Duration::from_secs(window.unsigned_abs()))
            };
            shared.lock().throttle = Throttle::new(quota);
            Ok((200, Some(json!({ "limit": limit, "window_secs": window }))))
        }
        _ => Err((404, "No such admin route".to_string())),
    }
}

/// Runs a change on the state and sends the webhooks it produced.
fn change<R>(
    shared: &Shared,
    f: impl FnOnce(&mut State) -> Result<R, ApiError>,
) -> Result<R, (u16, String)> {
    let mut inner = shared.lock();
    let result = f(&mut inner.state);
    inner.flush_events(&shared.hooks);
    result.map_err(|e| {
        let message = e.body["message"].as_str().unwrap_or("refused").to_string();
        (e.status, message)
    })
}

/// Applies an order update "in the CRM" and answers the order with every relation.
fn change_order(shared: &Shared, id: i64, body: &Value) -> Answer {
    change(shared, |state| orders::update_order(state, id, body))?;
    let inner = shared.lock();
    let all = super::http::Includes::all(orders::INCLUDES);
    let order = inner
        .state
        .orders
        .get(&id)
        .map(|o| orders::render(&inner.state, o, &all, &inner.state.reserves()));
    Ok((200, order))
}

fn set_faults(shared: &Shared, body: &Value) -> Answer {
    let known = [
        "fail_next",
        "fail_share",
        "latency_ms",
        "drop_next",
        "lose_next_creates",
        "lose_create_share",
    ];
    if let Some(unknown) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        return Err((
            422,
            format!("unknown fault `{unknown}`; known: {}", known.join(", ")),
        ));
    }
    let status = |v: &Value| -> Result<u16, (u16, String)> {
        match int_field(v, "status")? {
            None => Ok(500),
            Some(s) => u16::try_from(s)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or((422, "`status` is an HTTP status".to_string())),
        }
    };
    let share = |v: &Value| -> Result<f64, (u16, String)> {
        v.get("share")
            .and_then(Value::as_f64)
            .filter(|s| (0.0..=1.0).contains(s))
            .ok_or((422, "`share` is a number from 0 to 1".to_string()))
    };
    let count = |v: Option<i64>| -> Result<Option<u32>, (u16, String)> {
        v.map(|n| u32::try_from(n).map_err(|_| (422, "counts are 0 or more".to_string())))
            .transpose()
    };
    // Validate everything before arming anything.
    let fail_next = match body.get("fail_next") {
        Some(v) => Some((count(int_field(v, "count")?)?.unwrap_or(1), status(v)?)),
        None => None,
    };
    let fail_share = match body.get("fail_share") {
        Some(v) => Some((share(v)?, status(v)?, seed_of(v)?)),
        None => None,
    };
    let lose_share = match body.get("lose_create_share") {
        Some(v) => Some((share(v)?, seed_of(v)?)),
        None => None,
    };
    let latency = count(int_field(body, "latency_ms")?)?;
    let drop_next = count(int_field(body, "drop_next")?)?;
    let lose_next = count(int_field(body, "lose_next_creates")?)?;

    let mut inner = shared.lock();
    let faults = &mut inner.faults;
    if let Some((n, status)) = fail_next {
        faults.fail_next(n as usize, status);
    }
    if let Some((share, status, seed)) = fail_share {
        faults.fail_share(share, status, seed);
    }
    if let Some((share, seed)) = lose_share {
        faults.lose_share(share, seed);
    }
    if let Some(ms) = latency {
        faults.latency = Duration::from_millis(u64::from(ms));
    }
    if let Some(n) = drop_next {
        faults.drop_next(n);
    }
    if let Some(n) = lose_next {
        faults.lose_creates += n;
    }
    Ok((200, Some(json!({ "served": faults.served }))))
}

fn seed_of(v: &Value) -> Result<u64, (u16, String)> {
    match v.get("seed") {
        None | Some(Value::Null) => Ok(42),
        Some(s) => s
            .as_u64()
            .ok_or((422, "`seed` is a non-negative integer".to_string())),
    }
}

/// The request body as JSON; an empty body is `{}` when `empty_ok`.
fn parse(body: &[u8], empty_ok: bool) -> Result<Value, (u16, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(json!({}))
        } else {
            Err((400, "a JSON object body is required".to_string()))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err((400, "the body must be a JSON object".to_string())),
        Err(e) => Err((400, format!("the body is not JSON: {e}"))),
    }
}

fn path_id(raw: &str) -> Result<i64, (u16, String)> {
    raw.parse()
        .map_err(|_| (404, format!("`{raw}` is not a record id")))
}

fn int_field(body: &Value, key: &str) -> Result<Option<i64>, (u16, String)> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or((422, format!("`{key}` must be an integer"))),
    }
}

fn str_field<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, (u16, String)> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or((422, format!("`{key}` must be a string"))),
    }
}

fn decimal_field(body: &Value, key: &str) -> Result<Option<Decimal>, (u16, String)> {
    let bad = || (422, format!("`{key}` must be a number"));
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.to_string().parse().map(Some).map_err(|_| bad()),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A [`SeedConfig`] from JSON: every field optional, the defaults otherwise.
fn seed_config(body: &Value) -> Result<SeedConfig, (u16, String)> {
    let mut config = SeedConfig::default();
    let size = |key: &str, field: &mut usize| -> Result<(), (u16, String)> {
        if let Some(n) = int_field(body, key)? {
            *field = usize::try_from(n)
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or((422, format!("`{key}` is from 0 to 1000000")))?;
        }
        Ok(())
    };
    size("buyers", &mut config.buyers)?;
    size("companies", &mut config.companies)?;
    size("products", &mut config.products)?;
    size("orders", &mut config.orders)?;
    size("cards", &mut config.cards)?;
    size("calls", &mut config.calls)?;
    size("transactions", &mut config.transactions)?;
    if body.get("seed").is_some_and(|v| !v.is_null()) {
        config.seed = seed_of(body)?;
    }
    if let Some(days) = int_field(body, "days")? {
        config.days = u32::try_from(days)
            .ok()
            .filter(|d| *d >= 1)
            .ok_or((422, "`days` is 1 or more".to_string()))?;
    }
    if let Some(start) = str_field(body, "start")? {
        config.start = start.parse().map_err(|_| {
            (
                422,
                "`start` is a date and time (`2024-01-01 00:00:00`)".to_string(),
            )
        })?;
    }
    if let Some(key) = body.as_object().and_then(|o| {
        o.keys().find(|k| {
            ![
                "seed",
                "buyers",
                "companies",
                "products",
                "orders",
                "cards",
                "calls",
                "transactions",
                "days",
                "start",
            ]
            .contains(&k.as_str())
        })
    }) {
        return Err((422, format!("unknown seed setting `{key}`")));
    }
    Ok(config)
}

/// The ids [`seed::seed`] created, as JSON.
pub(crate) fn seeded_json(seeded: &Seeded) -> Value {
    json!({
        "buyers": seeded.buyers,
        "companies": seeded.companies,
        "categories": seeded.categories,
        "products": seeded.products,
        "offers": seeded.offers,
        "orders": seeded.orders,
        "cards": seeded.cards,
        "calls": seeded.calls,
        "transactions": seeded.transactions,
    })
}

fn request_json(r: &RecordedRequest) -> Value {
    json!({
        "method": r.method,
        "path": r.path,
        "query": r.query,
        "operation": r.operation,
        "status": r.status,
    })
}

fn delivery_json(d: &WebhookDelivery) -> Value {
    json!({
        "url": d.url,
        "event": d.event,
        "payload": d.payload,
        "attempts": d.attempts,
        "delivered": d.delivered,
    })
}

fn receivers_json(inner: &super::server::Inner) -> Value {
    json!({ "order": inner.trigger_hooks, "stock": inner.stock_hooks })
}

/// Keeps the identifying keys of reference rows.
fn trim(rows: impl IntoIterator<Item = Value>) -> Value {
    const KEYS: &[&str] = &[
        "id",
        "pipeline_id",
        "uuid",
        "name",
        "full_name",
        "alias",
        "model",
        "type",
        "group_id",
        "is_closing_order",
        "is_final",
    ];
    Value::Array(
        rows.into_iter()
            .map(|row| {
                let map: Map<String, Value> = KEYS
                    .iter()
                    .filter_map(|k| row.get(*k).map(|v| ((*k).to_string(), v.clone())))
                    .collect();
                Value::Object(map)
            })
            .collect(),
    )
}

/// The reference data of the account (see [`KeyCrmMock::reference`](super::KeyCrmMock::reference)).
pub(crate) fn reference(state: &State) -> Value {
    json!({
        "order_statuses": trim(state.statuses.iter().map(|s| s.row.clone())),
        "payment_methods": trim(state.payment_methods.iter().cloned()),
        "sources": trim(state.sources.iter().cloned()),
        "warehouses": trim(state.warehouses.iter().cloned()),
        "delivery_services": trim(state.delivery_services.iter().cloned()),
        "expense_types": trim(state.expense_types.iter().cloned()),
        "product_statuses": trim(state.product_statuses.iter().cloned()),
        "tags": trim(state.tags.iter().cloned()),
        "users": trim(state.users.iter().cloned()),
        "custom_fields": trim(state.custom_fields.iter().cloned()),
        "pipelines": trim(state.pipelines.iter().cloned()),
        "pipeline_statuses": trim(state.pipeline_statuses.iter().cloned()),
        "leads_enabled": state.leads_enabled,
    })
}
