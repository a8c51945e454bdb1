//! Buyers, companies, users and the call log.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::http::{ApiError, Ctx, Handled, Includes, Reply, page};
use super::model::*;
use super::orders;
use super::pipelines;
use super::state::{State, row, take};
use super::validate::Check;
use super::wire::{self, Time};

const BUYER_INCLUDES: &[&str] = &[
    "manager",
    "shipping",
    "company",
    "loyalty",
    "custom_fields",
    "customFields",
];
const COMPANY_INCLUDES: &[&str] = &["manager", "buyer", "custom_fields", "customFields"];
const BUYER_SHIPPING_FIELDS: &[&str] = &[
    "address",
    "additional_address",
    "city",
    "region",
    "zip_code",
    "country",
    "recipient_full_name",
    "recipient_phone",
    "warehouse_ref",
    "shipping_service",
];

/// A buyer as KeyCRM returns it.
pub(crate) fn render_buyer(state: &State, b: &Buyer, inc: &Includes) -> Value {
    let mut out = json!({
        "id": b.id,
        "full_name": b.full_name,
        "birthday": wire::date_opt(b.birthday),
        "email": b.email,
        "phone": b.phone,
        "note": wire::s(&b.note),
        "company_id": wire::id_opt(b.company_id),
        "manager_id": wire::id_opt(b.manager_id),
        "created_at": wire::iso(b.created_at),
        "updated_at": wire::iso(b.updated_at),
    });
    if inc.has("manager") {
        out["manager"] = b
            .manager_id
            .and_then(|id| state.user(id))
            .cloned()
            .unwrap_or(Value::Null);
    }
    if inc.has("shipping") {
        let rows: Vec<Value> = b
            .shipping
            .iter()
            .map(|s| {
                let mut full = Map::new();
                // Every field the service returns (`shipping_service` is input only).
                for key in BUYER_SHIPPING_FIELDS
                    .iter()
                    .filter(|k| **k != "shipping_service")
                {
                    full.insert((*key).into(), s.get(*key).cloned().unwrap_or(Value::Null));
                }
                Value::Object(full)
            })
            .collect();
        out["shipping"] = Value::Array(rows);
    }
    if inc.has("company") {
        out["company"] = b
            .company_id
            .and_then(|id| state.companies.get(&id))
            .map_or(Value::Null, |c| {
                render_company(state, c, &Includes::default())
            });
    }
    if inc.has("loyalty") {
        out["loyalty"] = match b.discount {
            Some(d) => json!([{
                "loyalty_program_id": 1, "loyalty_program_name": "Програма лояльності",
                "loyalty_program_level_id": 2, "loyalty_program_level_name": "Срібний",
                "amount": wire::num(orders_sum(state, b.id)), "discount": wire::num(d),
            }]),
            None => json!([]),
        };
    }
    if inc.has("custom_fields") {
        out["custom_fields"] = state.render_custom_fields(&b.custom_fields);
    }
    out
}

/// The sum of a buyer's orders.
fn orders_sum(state: &State, buyer_id: i64) -> Decimal {
    state
        .orders
        .values()
        .filter(|o| o.client_id == buyer_id)
        .map(|o| orders::totals(state, o).grand_total)
        .sum()
}

/// The buyer in the flat "client" shape used by calls and card contacts.
pub(crate) fn render_client(state: &State, b: &Buyer) -> Value {
    let count = state
        .orders
        .values()
        .filter(|o| o.client_id == b.id)
        .count();
    json!({
        "id": b.id,
        "company_id": wire::id_opt(b.company_id),
        "full_name": b.full_name,
        "phone": b.phone.first(),
        "formatted_phone": b.phone.first(),
        "additional_phone": b.phone.get(1),
        "email": b.email.first(),
        "note": wire::s(&b.note),
        "picture": null,
        "image": null,
        "currency": "UAH",
        "orders_sum": wire::text(orders_sum(state, b.id), 2),
        "orders_count": count,
        "has_duplicates": 0,
        "manager_id": wire::id_opt(b.manager_id),
        "created_at": wire::iso(b.created_at),
        "updated_at": wire::iso(b.updated_at),
    })
}

/// Buyer fields as sent; `None` means "not sent".
#[derive(Debug, Default)]
pub(crate) struct BuyerInput {
    pub full_name: Option<String>,
    birthday: Option<Option<NaiveDate>>,
    email: Option<Vec<String>>,
    phone: Option<Vec<String>>,
    note: Option<Option<String>>,
    discount: Option<Decimal>,
    company_id: Option<i64>,
    manager_id: Option<i64>,
    shipping: Option<Vec<Map<String, Value>>>,
    custom_fields: Option<Vec<(String, Value)>>,
}

impl BuyerInput {
    /// Whether the input names the buyer in any way.
    pub fn identifies(&self) -> bool {
        self.full_name
            .as_ref()
            .is_some_and(|n| !n.trim().is_empty())
            || self.email.as_ref().is_some_and(|e| !e.is_empty())
            || self.phone.as_ref().is_some_and(|p| !p.is_empty())
    }
}

pub(crate) fn read_buyer(
    state: &State,
    c: &mut Check,
    body: &Value,
    prefix: &str,
    name_required: bool,
) -> BuyerInput {
    BuyerInput {
        full_name: if name_required {
            c.req_str(body, prefix, "full_name")
        } else {
            c.str(body, prefix, "full_name")
        },
        birthday: body
            .get("birthday")
            .map(|_| c.date(body, prefix, "birthday")),
        email: c.strings(body, prefix, "email"),
        phone: c.strings(body, prefix, "phone"),
        note: body.get("note").map(|_| c.str(body, prefix, "note")),
        discount: c.dec(body, prefix, "discount"),
        company_id: c.int_in(body, prefix, "company_id", |id| {
            state.companies.contains_key(&id)
        }),
        manager_id: c.int_in(body, prefix, "manager_id", |id| state.user(id).is_some()),
        shipping: c.array(body, prefix, "shipping", None).map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, item)| {
                    c.string_map(
                        item,
                        &format!("{}.{i}", super::validate::join(prefix, "shipping")),
                        BUYER_SHIPPING_FIELDS,
                    )
                })
                .collect()
        }),
        custom_fields: c.custom_fields(body, prefix, |uuid| {
            state.custom_field_known("client", uuid)
        }),
    }
}

pub(crate) fn insert_buyer(state: &mut State, input: BuyerInput, now: Time) -> i64 {
    let id = take(&mut state.ids.buyer);
    state.buyers.insert(
        id,
        Buyer {
            id,
            full_name: input.full_name.unwrap_or_default(),
            birthday: input.birthday.flatten(),
            email: input.email.unwrap_or_default(),
            phone: input.phone.unwrap_or_default(),
            note: input.note.flatten(),
            discount: input.discount,
            company_id: input.company_id,
            manager_id: input.manager_id,
            shipping: input.shipping.unwrap_or_default(),
            custom_fields: input.custom_fields.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        },
    );
    id
}

/// Applies an update to a buyer (`PUT /buyer/{id}` or a change made in the CRM).
pub(crate) fn apply_buyer_update(state: &mut State, id: i64, input: BuyerInput, now: Time) {
    let Some(b) = state.buyers.get_mut(&id) else {
        return;
    };
    if let Some(v) = input.full_name {
        b.full_name = v;
    }
    if let Some(v) = input.birthday {
        b.birthday = v;
    }
    if let Some(v) = input.email {
        b.email = v;
    }
    if let Some(v) = input.phone {
        b.phone = v;
    }
    if let Some(v) = input.note {
        b.note = v;
    }
    if let Some(v) = input.discount {
        b.discount = Some(v);
    }
    if let Some(v) = input.company_id {
        b.company_id = Some(v);
    }
    if let Some(v) = input.manager_id {
        b.manager_id = Some(v);
    }
    if let Some(v) = input.shipping {
        b.shipping = v;
    }
    if let Some(values) = input.custom_fields {
        State::merge_custom_fields(&mut b.custom_fields, values);
    }
    b.updated_at = now;
}

fn buyer_or_404(state: &State, id: i64) -> Result<&Buyer, ApiError> {
    state
        .buyers
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Client", id))
}

pub(crate) fn buyer_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(BUYER_INCLUDES)?;
    let ids = ctx.filter_ids("buyer_id");
    let phones: Option<Vec<String>> = ctx
        .filter_list("buyer_phone")
        .map(|l| l.iter().map(|p| wire::phone_digits(p)).collect());
    let emails: Option<Vec<String>> = ctx
        .filter_list("buyer_email")
        .map(|l| l.iter().map(|e| e.to_lowercase()).collect());
    let created = ctx.filter_range("created_between")?;
    let updated = ctx.filter_range("updated_between")?;
    let items: Vec<&Buyer> = state
        .buyers
        .values()
        .filter(|b| ids.as_ref().is_none_or(|l| l.contains(&b.id)))
        .filter(|b| {
            phones
                .as_ref()
                .is_none_or(|l| b.phone.iter().any(|p| l.contains(&wire::phone_digits(p))))
        })
        .filter(|b| {
            emails
                .as_ref()
                .is_none_or(|l| b.email.iter().any(|e| l.contains(&e.to_lowercase())))
        })
        .filter(|b| created.is_none_or(|r| r.contains(b.created_at)))
        .filter(|b| updated.is_none_or(|r| r.contains(b.updated_at)))
        .collect();
    page(ctx, &items, |b| render_buyer(state, b, &inc))
}

pub(crate) fn buyer_get(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Client")?;
    let inc = ctx.includes(BUYER_INCLUDES)?;
    let b = buyer_or_404(state, id)?;
    Ok(Reply::ok(render_buyer(state, b, &inc)))
}

pub(crate) fn buyer_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let input = read_buyer(state, &mut c, &body, "", true);
    c.finish()?;
    let now = state.now();
    let id = insert_buyer(state, input, now);
    Ok(Reply::created(render_buyer(
        state,
        &state.buyers[&id],
        &Includes::default(),
    )))
}

pub(crate) fn buyer_import(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let mut inputs = Vec::new();
    if let Some(list) = c.req_array(&body, "", "buyers", None) {
        for (i, item) in list.iter().enumerate() {
            inputs.push(read_buyer(
                state,
                &mut c,
                item,
                &format!("buyers.{i}"),
                false,
            ));
        }
    }
    c.finish()?;
    // The service refuses the whole batch with `{"status": false}` when a buyer cannot be
    // created; a buyer with neither a name nor any contact is such a case.
    if inputs.iter().any(|b| !b.identifies()) {
        return Err(ApiError {
            status: 400,
            body: json!({ "status": false }),
        });
    }
    let now = state.now();
    for input in inputs {
        insert_buyer(state, input, now);
    }
    Ok(Reply::status_true(201))
}

pub(crate) fn buyer_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Client")?;
    buyer_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let input = read_buyer(state, &mut c, &body, "", true);
    c.finish()?;
    let now = state.now();
    apply_buyer_update(state, id, input, now);
    Ok(Reply::accepted(render_buyer(
        state,
        &state.buyers[&id],
        &Includes::default(),
    )))
}

/// A company as KeyCRM returns it.
pub(crate) fn render_company(state: &State, c: &Company, inc: &Includes) -> Value {
    let mut out = json!({
        "id": c.id,
        "name": c.name,
        "title": wire::s(&c.title),
        "notes": wire::s(&c.notes),
        "bank_account": wire::s(&c.bank_account),
        "manager_id": wire::id_opt(c.manager_id),
        "created_at": wire::iso(c.created_at),
        "updated_at": wire::iso(c.updated_at),
    });
    if inc.has("manager") {
        out["manager"] = c
            .manager_id
            .and_then(|id| state.user(id))
            .cloned()
            .unwrap_or(Value::Null);
    }
    if inc.has("buyer") {
        let buyers: Vec<Value> = state
            .buyers
            .values()
            .filter(|b| b.company_id == Some(c.id))
            .map(|b| render_buyer(state, b, &Includes::default()))
            .collect();
        out["buyer"] = Value::Array(buyers);
    }
    if inc.has("custom_fields") {
        out["custom_fields"] = state.render_custom_fields(&c.custom_fields);
    }
    out
}

struct CompanyInput {
    name: Option<String>,
    title: Option<Option<String>>,
    notes: Option<Option<String>>,
    bank_account: Option<Option<String>>,
    manager_id: Option<i64>,
    buyers: Option<Vec<i64>>,
    custom_fields: Option<Vec<(String, Value)>>,
}

fn read_company(state: &State, c: &mut Check, body: &Value) -> CompanyInput {
    let buyers = c.array(body, "", "buyer_id", None).map(|list| {
        let mut ids = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let id = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match id.filter(|id| state.buyers.contains_key(id)) {
                Some(id) => ids.push(id),
                None => c.invalid(&format!("buyer_id.{i}")),
            }
        }
        ids
    });
    let opt = |c: &mut Check, key: &str| body.get(key).map(|_| c.str(body, "", key));
    CompanyInput {
        name: c.req_str(body, "", "name"),
        title: opt(c, "title"),
        notes: opt(c, "notes"),
        bank_account: opt(c, "bank_account"),
        manager_id: c.int_in(body, "", "manager_id", |id| state.user(id).is_some()),
        buyers,
        custom_fields: c.custom_fields(body, "", |uuid| state.custom_field_known("company", uuid)),
    }
}

/// Links buyers to a company (touching them).
fn link_buyers(state: &mut State, company: i64, buyers: &[i64], now: Time) {
    for id in buyers {
        if let Some(b) = state.buyers.get_mut(id) {
            b.company_id = Some(company);
            b.updated_at = now;
        }
    }
}

fn company_or_404(state: &State, id: i64) -> Result<&Company, ApiError> {
    state
        .companies
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Company", id))
}

pub(crate) fn company_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(COMPANY_INCLUDES)?;
    let ids = ctx.filter_ids("company_id");
    let created = ctx.filter_range("created_between")?;
    let updated = ctx.filter_range("updated_between")?;
    let items: Vec<&Company> = state
        .companies
        .values()
        .filter(|c| ids.as_ref().is_none_or(|l| l.contains(&c.id)))
        .filter(|c| created.is_none_or(|r| r.contains(c.created_at)))
        .filter(|c| updated.is_none_or(|r| r.contains(c.updated_at)))
        .collect();
    page(ctx, &items, |c| render_company(state, c, &inc))
}

pub(crate) fn company_get(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Company")?;
    let inc = ctx.includes(COMPANY_INCLUDES)?;
    let c = company_or_404(state, id)?;
    Ok(Reply::ok(render_company(state, c, &inc)))
}

pub(crate) fn company_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let input = read_company(state, &mut c, &body);
    c.finish()?;
    let now = state.now();
    let id = take(&mut state.ids.company);
    state.companies.insert(
        id,
        Company {
            id,
            name: input.name.unwrap_or_default(),
            title: input.title.flatten(),
            notes: input.notes.flatten(),
            bank_account: input.bank_account.flatten(),
            manager_id: input.manager_id,
            custom_fields: input.custom_fields.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        },
    );
    link_buyers(state, id, &input.buyers.unwrap_or_default(), now);
    Ok(Reply::created(render_company(
        state,
        &state.companies[&id],
        &Includes::default(),
    )))
}

pub(crate) fn company_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Company")?;
    company_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let input = read_company(state, &mut c, &body);
    c.finish()?;
    let now = state.now();
    if let Some(company) = state.companies.get_mut(&id) {
        if let Some(v) = input.name {
            company.name = v;
        }
        if let Some(v) = input.title {
            company.title = v;
        }
        if let Some(v) = input.notes {
            company.notes = v;
        }
        if let Some(v) = input.bank_account {
            company.bank_account = v;
        }
        if let Some(v) = input.manager_id {
            company.manager_id = Some(v);
        }
        if let Some(values) = input.custom_fields {
            State::merge_custom_fields(&mut company.custom_fields, values);
        }
        company.updated_at = now;
    }
    link_buyers(state, id, &input.buyers.unwrap_or_default(), now);
    Ok(Reply::ok(render_company(
        state,
        &state.companies[&id],
        &Includes::default(),
    )))
}

/// A text field of a JSON row.
fn text<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key].as_str().unwrap_or_default()
}

pub(crate) fn user_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let ids = ctx.filter_ids("id");
    let roles = ctx.filter_ids("role_id");
    let name = ctx.filter("full_name").map(str::to_lowercase);
    let status = ctx.filter_list("status");
    let email = ctx.filter("email").map(str::to_lowercase);
    let phone = ctx.filter("phone").map(wire::phone_digits);
    let created = ctx.filter_range("created_between")?;
    let logged = ctx.filter_range("last_logged_between")?;
    let items: Vec<&Value> = state
        .users
        .iter()
        .filter(|u| {
            ids.as_ref()
                .is_none_or(|l| u["id"].as_i64().is_some_and(|id| l.contains(&id)))
        })
        .filter(|u| {
            roles
                .as_ref()
                .is_none_or(|l| u["role_id"].as_i64().is_some_and(|id| l.contains(&id)))
        })
        .filter(|u| {
            name.as_ref()
                .is_none_or(|n| text(u, "full_name").to_lowercase().contains(n))
        })
        .filter(|u| {
            status
                .as_ref()
                .is_none_or(|l| l.iter().any(|s| s == text(u, "status")))
        })
        .filter(|u| {
            email
                .as_ref()
                .is_none_or(|e| text(u, "email").to_lowercase() == *e)
        })
        .filter(|u| {
            phone
                .as_ref()
                .is_none_or(|p| wire::phone_digits(text(u, "phone")) == *p)
        })
        .filter(|u| created.is_none_or(|r| r.contains_opt(wire::parse_time(text(u, "created_at")))))
        .filter(|u| {
            logged.is_none_or(|r| r.contains_opt(wire::parse_time(text(u, "last_logged_at"))))
        })
        .collect();
    page(ctx, &items, |u| (*u).clone())
}

pub(crate) fn call_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(&["manager", "service", "lead", "client"])?;
    let refs = ctx.filter_list("reference_id");
    let clients = ctx.filter_ids("client_id");
    let managers = ctx.filter_ids("manager_id");
    let leads = ctx.filter_ids("lead_id");
    let kind = ctx.filter("type");
    let phones: Option<Vec<String>> = ctx
        .filter_list("client_phone")
        .map(|l| l.iter().map(|p| wire::phone_digits(p)).collect());
    let created = ctx.filter_range("created_between")?;
    let id_in = |row: &Value, key: &str, list: &Option<Vec<i64>>| {
        list.as_ref()
            .is_none_or(|l| row[key].as_i64().is_some_and(|v| l.contains(&v)))
    };
    let items: Vec<&Value> = state
        .calls
        .iter()
        .filter(|c| {
            refs.as_ref()
                .is_none_or(|l| l.iter().any(|r| r == text(c, "reference_id")))
        })
        .filter(|c| id_in(c, "client_id", &clients))
        .filter(|c| id_in(c, "user_id", &managers))
        .filter(|c| id_in(c, "lead_id", &leads))
        .filter(|c| kind.is_none_or(|k| text(c, "type") == k))
        .filter(|c| {
            phones
                .as_ref()
                .is_none_or(|l| l.contains(&wire::phone_digits(text(c, "external_number"))))
        })
        .filter(|c| created.is_none_or(|r| r.contains_opt(wire::parse_time(text(c, "created_at")))))
        .collect();
    page(ctx, &items, |call| {
        let mut out = (*call).clone();
        if inc.has("manager") {
            out["manager"] = call["user_id"]
                .as_i64()
                .and_then(|id| state.user(id))
                .cloned()
                .unwrap_or(Value::Null);
        }
        if inc.has("service") {
            out["service"] = call["call_route_service_id"]
                .as_i64()
                .and_then(|id| row(&state.call_services, id))
                .cloned()
                .unwrap_or(Value::Null);
        }
        if inc.has("client") {
            out["client"] = call["client_id"]
                .as_i64()
                .and_then(|id| state.buyers.get(&id))
                .map_or(Value::Null, |b| render_client(state, b));
        }
        if inc.has("lead") {
            out["lead"] = call["lead_id"]
                .as_i64()
                .and_then(|id| state.cards.get(&id))
                .map_or(Value::Null, |c| {
                    pipelines::render_card(state, c, &Includes::default())
                });
        }
        out
    })
}
