//! Reference lists, custom field definitions, file storage and external transactions.

use serde_json::{Value, json};

use super::http::{ApiError, Ctx, Handled, Reply, SortKey, page, sort_items};
use super::model::*;
use super::orders;
use super::pipelines;
use super::state::{State, take};
use super::validate::Check;
use super::wire;

/// The largest upload KeyCRM accepts.
const MAX_UPLOAD: usize = 10 * 1024 * 1024;

/// A page of reference rows sorted by `id` (or `position`, `name`).
fn dictionary(rows: &[Value], ctx: &Ctx<'_>) -> Handled {
    let sorts = ctx.sorts(&["id", "name", "position"])?;
    let mut items: Vec<&Value> = rows.iter().collect();
    sort_items(&mut items, &sorts, |r, field| match &r[field] {
        Value::Number(n) => n.as_i64().map_or(SortKey::Null, SortKey::Int),
        Value::String(s) => SortKey::Text(s.clone()),
        _ => SortKey::Null,
    });
    page(ctx, &items, |r| (*r).clone())
}

pub(crate) fn tag_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    dictionary(&state.tags, ctx)
}

pub(crate) fn source_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    dictionary(&state.sources, ctx)
}

pub(crate) fn status_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let rows: Vec<Value> = state.statuses.iter().map(|s| s.row.clone()).collect();
    dictionary(&rows, ctx)
}

pub(crate) fn payment_method_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    dictionary(&state.payment_methods, ctx)
}

pub(crate) fn expense_type_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    dictionary(&state.expense_types, ctx)
}

pub(crate) fn delivery_service_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    dictionary(&state.delivery_services, ctx)
}

pub(crate) fn product_status_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    dictionary(&state.product_statuses, ctx)
}

/// `GET /custom-fields`: a plain array, not a page.
pub(crate) fn custom_field_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(&["options"])?;
    let sorts = ctx.sorts(&["id", "position", "name"])?;
    let models = ctx.filter_list("model");
    let mut items: Vec<&Value> = state
        .custom_fields
        .iter()
        .filter(|f| {
            models
                .as_ref()
                .is_none_or(|l| l.iter().any(|m| f["model"] == m.as_str()))
        })
        .collect();
    sort_items(&mut items, &sorts, |f, field| match &f[field] {
        Value::Number(n) => n.as_i64().map_or(SortKey::Null, SortKey::Int),
        Value::String(s) => SortKey::Text(s.clone()),
        _ => SortKey::Null,
    });
    let out: Vec<Value> = items
        .into_iter()
        .map(|f| {
            let mut f = f.clone();
            if !inc.has("options")
                && let Some(map) = f.as_object_mut()
            {
                map.remove("options");
            }
            f
        })
        .collect();
    Ok(Reply::ok(Value::Array(out)))
}

/// A stored file as KeyCRM returns it.
pub(crate) fn render_file(f: &File) -> Value {
    let image = f.mime_type.starts_with("image/");
    json!({
        "id": f.id,
        "file_name": f.file_name,
        "url": f.url,
        "size": f.size,
        "extension": f.extension,
        "original_file_name": f.original_file_name,
        "mime_type": f.mime_type,
        "thumbnail": if image { Value::from(f.url.clone()) } else { Value::Null },
        "hash": f.hash,
        "disk": "public",
        "directory": "files",
        "created_at": wire::iso(f.created_at),
        "updated_at": wire::iso(f.updated_at),
    })
}

pub(crate) fn storage_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let sorts = ctx.sorts(&["id", "size", "created_at"])?;
    let mut items: Vec<&File> = state.files.values().collect();
    sort_items(&mut items, &sorts, |f, field| match field {
        "size" => SortKey::Int(f.size as i64),
        "created_at" => f.created_at.into(),
        _ => f.id.into(),
    });
    page(ctx, &items, |f| render_file(f))
}

/// `GET /storage/attachment/{entityType}/{entityId}`: a plain array.
pub(crate) fn storage_attachment_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let kind = ctx.params.first().copied().unwrap_or_default();
    let files = match kind {
        "order" => {
            let id = ctx.id(1, "Order")?;
            &state
                .orders
                .get(&id)
                .ok_or_else(|| ApiError::not_found("Order", id))?
                .attachments
        }
        "pipelines" | "lead" => {
            let id = ctx.id(1, "Lead")?;
            &state
                .cards
                .get(&id)
                .ok_or_else(|| ApiError::not_found("Lead", id))?
                .attachments
        }
        other => {
            return Err(ApiError::message(
                404,
                format!("Unknown entity type `{other}`; use `order` or `pipelines`."),
            ));
        }
    };
    let out: Vec<Value> = files
        .iter()
        .filter_map(|id| state.files.get(id))
        .map(render_file)
        .collect();
    Ok(Reply::ok(Value::Array(out)))
}

/// The part named `file` of a `multipart/form-data` body: file name, content type, bytes.
fn multipart_file<'a>(
    content_type: &str,
    body: &'a [u8],
) -> Option<(String, Option<String>, &'a [u8])> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let rest_part = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        let header_end = find(rest_part, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&rest_part[..header_end]).to_string();
        let content_start = header_end + 4;
        let content_len = find(&rest_part[content_start..], delimiter)?;
        let mut content = &rest_part[content_start..content_start + content_len];
        content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let mut name = None;
        let mut file_name = None;
        let mut mime = None;
        for line in headers.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for piece in line.split(';').map(str::trim) {
                    if let Some(v) = piece.strip_prefix("name=") {
                        name = Some(v.trim_matches('"').to_string());
                    } else if let Some(v) = piece.strip_prefix("filename=") {
                        file_name = Some(v.trim_matches('"').to_string());
                    }
                }
            } else if lower.starts_with("content-type:") {
                mime = line.split_once(':').map(|(_, v)| v.trim().to_string());
            }
        }
        if name.as_deref() == Some("file") {
            return Some((file_name.unwrap_or_else(|| "file".into()), mime, content));
        }
        rest = &rest_part[content_start + content_len..];
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// FNV-1a, twice with different offsets, as a 32-digit hex content hash.
fn content_hash(bytes: &[u8]) -> String {
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// `POST /storage/upload`: 201 for a new file, 200 with the existing record when the same
/// content was uploaded before, 413 above 10 MB.
pub(crate) fn storage_upload(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let Some((name, mime, content)) = ctx.content_type.and_then(|ct| multipart_file(ct, ctx.body))
    else {
        let mut c = Check::new();
        c.required("file");
        return Err(c.finish().expect_err("an error was recorded"));
    };
    if content.len() > MAX_UPLOAD {
        return Err(ApiError::message(
            413,
            "The file may not be greater than 10240 kilobytes.",
        ));
    }
    let hash = content_hash(content);
    if let Some(existing) = state.files.values().find(|f| f.hash == hash) {
        return Ok(Reply::ok(render_file(existing)));
    }
    let now = state.now();
    let id = take(&mut state.ids.file);
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let file_name = if extension.is_empty() {
        hash[..20].to_string()
    } else {
        format!("{}.{extension}", &hash[..20])
    };
    let file = File {
        id,
        url: format!("{}/files/{file_name}", ctx.origin),
        file_name,
        original_file_name: name,
        extension,
        mime_type: mime.unwrap_or_else(|| "application/octet-stream".into()),
        size: content.len(),
        hash,
        content: content.to_vec(),
        created_at: now,
        updated_at: now,
    };
    let body = render_file(&file);
    state.files.insert(id, file);
    Ok(Reply::created(body))
}

/// An external transaction as KeyCRM returns it.
fn render_transaction(t: &Transaction) -> Value {
    let payments: Vec<Value> = t
        .payment_id
        .map(|p| json!({ "payment_id": p, "amount": wire::text(t.amount, 2) }))
        .into_iter()
        .collect();
    json!({
        "id": t.id,
        "uuid": t.uuid,
        "source_uuid": null,
        "gateway_id": t.gateway_id,
        "payments_data": payments,
        "amount": wire::text(t.amount, 2),
        "description": wire::s(&t.description),
        "currency": t.currency,
        "transaction_date": wire::iso(t.transaction_date),
        "created_at": wire::iso(t.created_at),
        "updated_at": wire::iso(t.updated_at),
    })
}

pub(crate) fn transaction_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let ids = ctx.filter_ids("id");
    let uuids = ctx.filter_list("transaction_uuid");
    let gateways = ctx.filter_ids("gateway_id");
    let attached = ctx.filter_bool("is_attached");
    let created = ctx.filter_range("created_between")?;
    let items: Vec<&Transaction> = state
        .transactions
        .values()
        .filter(|t| ids.as_ref().is_none_or(|l| l.contains(&t.id)))
        .filter(|t| uuids.as_ref().is_none_or(|l| l.contains(&t.uuid)))
        .filter(|t| gateways.as_ref().is_none_or(|l| l.contains(&t.gateway_id)))
        .filter(|t| attached.is_none_or(|a| t.payment_id.is_some() == a))
        .filter(|t| created.is_none_or(|r| r.contains(t.created_at)))
        .collect();
    page(ctx, &items, |t| render_transaction(t))
}

/// `POST /payments/{paymentId}/external-transactions`.
pub(crate) fn transaction_attach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let payment_id = ctx.id(0, "Payment")?;
    let destination = state
        .payments
        .get(&payment_id)
        .ok_or_else(|| ApiError::not_found("Payment", payment_id))?
        .destination;
    let body = ctx.json();
    let mut c = Check::new();
    let tx_id = c.int(&body, "", "transaction_id");
    let tx_uuid = c
        .str(&body, "", "transaction_uuid")
        .filter(|u| !u.is_empty());
    if tx_id.is_none() && tx_uuid.is_none() && c.is_ok() {
        c.fail(
            "transaction_id",
            "The transaction id field is required when transaction uuid is not present.",
        );
    }
    c.finish()?;
    let tx = state
        .transactions
        .values()
        .find(|t| tx_id.map_or_else(|| Some(&t.uuid) == tx_uuid.as_ref(), |id| t.id == id))
        .map(|t| t.id)
        .ok_or_else(|| {
            ApiError::not_found(
                "ExternalTransaction",
                tx_id.map_or_else(|| tx_uuid.clone().unwrap_or_default(), |id| id.to_string()),
            )
        })?;
    let link = move |state: &mut State, now| {
        let uuid = state.transactions.get(&tx).map(|t| t.uuid.clone());
        if let Some(t) = state.transactions.get_mut(&tx) {
            t.payment_id = Some(payment_id);
            t.updated_at = now;
        }
        if let Some(p) = state.payments.get_mut(&payment_id) {
            p.transaction_uuid = uuid;
            p.updated_at = now;
        }
        Ok(())
    };
    match destination {
        Destination::Order(order) => orders::mutate(state, order, link)?,
        Destination::Card(card) => pipelines::mutate_card(state, card, link)?,
    }
    Ok(Reply::created(orders::render_payment(
        state,
        &state.payments[&payment_id],
        false,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_part_of_a_multipart_body() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
        let (name, mime, content) =
            multipart_file("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(name, "a.txt");
        assert_eq!(mime.as_deref(), Some("text/plain"));
        assert_eq!(content, b"hello");
    }
}
