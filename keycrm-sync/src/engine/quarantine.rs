//! Records of a list page that cannot be decoded: read the page as raw JSON, decode each
//! record by itself, set aside (quarantine) the ones of an unknown shape and apply the rest.
//!
//! A quarantined record is kept per kind in the store (under the cursor name
//! [`QUARANTINE_CURSOR`]), shown by [`SyncEngine::status`](super::SyncEngine::status) and written
//! once to the audit log. A pass that quarantined a record is not complete: its cursor stays
//! (so the record is read again) and it creates no tombstones. An entry leaves the quarantine
//! when its record decodes again, or when a full pass no longer finds it broken.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use keycrm_api::Page;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SyncEngine, SyncError, SyncEvent};
use crate::host::Host;
use crate::model::EntityKind;
use crate::model::redact;
use crate::store::Store;

/// The cursor name under which a kind's quarantined records are kept (a JSON list).
pub(crate) const QUARANTINE_CURSOR: &str = "quarantine";

/// Page size of the raw list reads (KeyCRM's maximum).
const PAGE_SIZE: u64 = 50;

/// A remote record that could not be decoded and was set aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The record's kind.
    pub kind: EntityKind,
    /// KeyCRM's id of the record, when the record carries a readable one.
    pub remote_id: Option<i64>,
    /// The JSON path of the offending value inside the record (`grand_total`,
    /// `products[0].offer.price`).
    pub path: String,
    /// The KeyCRM operation the record came from (`order_list`).
    pub operation: String,
    /// What was wrong, without the value itself.
    pub reason: String,
    /// When it was quarantined (first seen broken).
    pub at: DateTime<Utc>,
}

impl Quarantined {
    /// The id used in the audit log and events: `remote:<id>` (or `remote:?`).
    pub(crate) fn local_ref(&self) -> String {
        match self.remote_id {
            Some(id) => format!("remote:{id}"),
            None => "remote:?".to_string(),
        }
    }
}

/// A list operation read as raw JSON.
#[derive(Clone, Debug)]
pub(crate) struct RawList {
    /// The operation name (`order_list`).
    pub(crate) operation: &'static str,
    /// The path (`/order`).
    pub(crate) path: &'static str,
    /// Query parameters besides `limit` and `page`.
    pub(crate) query: Vec<(&'static str, String)>,
}

impl RawList {
    pub(crate) fn new(operation: &'static str, path: &'static str) -> Self {
        Self {
            operation,
            path,
            query: Vec::new(),
        }
    }

    pub(crate) fn param(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
}

/// One record of a raw page: decoded, or set aside.
pub(crate) enum Decoded<T> {
    Record(T),
    Broken(Quarantined),
}

/// Decodes one record, naming the path of the first offending value on failure (quarantined
/// `now`, the engine's time).
pub(crate) fn decode<T: DeserializeOwned>(
    kind: EntityKind,
    operation: &str,
    record: &Value,
    now: DateTime<Utc>,
) -> Decoded<T> {
    match serde_path_to_error::deserialize::<_, T>(record) {
        Ok(value) => Decoded::Record(value),
        Err(e) => {
            let path = e.path().to_string();
            Decoded::Broken(Quarantined {
                kind,
                remote_id: remote_id_of(record),
                path: redact::bounded(&path),
                operation: operation.to_string(),
                reason: redact::message(&e.into_inner().to_string()),
                at: now,
            })
        }
    }
}

/// The record's `id`, if it is a whole number (or a string of one).
fn remote_id_of(record: &Value) -> Option<i64> {
    match record.get("id")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A raw list's pages, one at a time, refusing a service that does not advance.
pub(crate) struct RawPages {
    list: RawList,
    next: Option<u64>,
    previous: Option<Vec<Value>>,
}

impl RawPages {
    pub(crate) fn new(list: RawList) -> Self {
        Self {
            list,
            next: Some(1),
            previous: None,
        }
    }

    pub(crate) fn operation(&self) -> &'static str {
        self.list.operation
    }
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// The next page of a raw list, `None` after the last.
    pub(crate) async fn next_raw_page(
        &self,
        pages: &mut RawPages,
    ) -> Result<Option<Vec<Value>>, SyncError> {
        let Some(number) = pages.next else {
            return Ok(None);
        };
        let mut query = pages.list.query.clone();
        query.push(("limit", PAGE_SIZE.to_string()));
        query.push(("page", number.to_string()));
        let page: Page<Value> = self
            .call(
                self.inner
                    .client
                    .list_page_raw(pages.list.operation, pages.list.path, &query),
            )
            .await?;
        let advanced = page
            .current_page
            .is_none_or(|current| u64::try_from(current).ok() == Some(number));
        if !advanced || (!page.data.is_empty() && pages.previous.as_ref() == Some(&page.data)) {
            return Err(SyncError::Api(keycrm_api::Error::PageNotAdvancing {
                requested: number,
                received: page.current_page,
            }));
        }
        pages.next = page.has_next().then_some(number + 1);
        pages.previous = Some(page.data.clone());
        Ok(Some(page.data))
    }

    /// Sets a broken record aside: audited and published when it is newly broken.
    pub(crate) async fn quarantine(
        &self,
        record: &Quarantined,
        stored: &[Quarantined],
        this_pass: &[Quarantined],
    ) -> Result<(), SyncError> {
        tracing::warn!(
            target: "keycrm_sync",
            kind = record.kind.as_str(),
            remote_id = record.remote_id,
            path = %record.path,
            operation = %record.operation,
            "record quarantined: it cannot be decoded"
        );
        let known = stored
            .iter()
            .chain(this_pass)
            .any(|q| q.remote_id == record.remote_id && q.path == record.path);
        if known {
            return Ok(());
        }
        let detail = format!(
            "cannot decode {} {} from {} at `{}`: {}; the rest of the page was applied",
            record.kind,
            record
                .remote_id
                .map_or("?".to_string(), |id| id.to_string()),
            record.operation,
            record.path,
            record.reason
        );
        self.audit(
            record.kind,
            &record.local_ref(),
            "quarantined",
            detail.clone(),
        )
        .await?;
        self.publish(SyncEvent::Failed {
            kind: record.kind,
            local_id: record.local_ref(),
            error: detail,
            dead: false,
        });
        Ok(())
    }

    /// The quarantined records of `kind`, as stored.
    pub(crate) async fn quarantined_of(
        &self,
        kind: EntityKind,
    ) -> Result<Vec<Quarantined>, SyncError> {
        let stored = self.inner.store.get_cursor(kind, QUARANTINE_CURSOR).await?;
        Ok(stored
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    /// Every quarantined record, by kind.
    pub(crate) async fn quarantined_all(&self) -> Result<Vec<Quarantined>, SyncError> {
        let mut out = Vec::new();
        for kind in EntityKind::ALL {
            out.extend(self.quarantined_of(kind).await?);
        }
        Ok(out)
    }

    /// After a pass of `kind`: records decoded in it (`decoded`) leave the quarantine, so do
    /// all earlier entries when the pass walked the whole list (`walked_all`); the records
    /// found broken (`broken`) are (still) in it.
    pub(crate) async fn settle_quarantine(
        &self,
        kind: EntityKind,
        decoded: &BTreeSet<i64>,
        broken: Vec<Quarantined>,
        walked_all: bool,
    ) -> Result<(), SyncError> {
        let before = self.quarantined_of(kind).await?;
        let mut after: Vec<Quarantined> = if walked_all {
            Vec::new()
        } else {
            before
                .iter()
                .filter(|q| q.remote_id.is_none_or(|id| !decoded.contains(&id)))
                .filter(|q| {
                    !broken
                        .iter()
                        .any(|b| b.remote_id.is_some() && b.remote_id == q.remote_id)
                })
                .cloned()
                .collect()
        };
        for record in broken {
            // Keep the first time it was seen broken.
            let first = before
                .iter()
                .find(|q| q.remote_id == record.remote_id && q.path == record.path)
                .map_or(record.at, |q| q.at);
            if !after
                .iter()
                .any(|q| q.remote_id == record.remote_id && q.path == record.path)
            {
                after.push(Quarantined {
                    at: first,
                    ..record
                });
            }
        }
        if after != before {
            let text = serde_json::to_string(&after).unwrap_or_else(|_| "[]".to_string());
            self.inner
                .store
                .set_cursor(kind, QUARANTINE_CURSOR, &text, self.now())
                .await?;
        }
        Ok(())
    }
}

/// The raw lists the reconciliation passes read.
pub(crate) fn order_list(include: &str) -> RawList {
    RawList::new("order_list", "/order")
        .param("include", include)
        .param("sort", "id")
}

pub(crate) fn buyer_list() -> RawList {
    RawList::new("buyer_list", "/buyer")
}

pub(crate) fn product_list() -> RawList {
    RawList::new("product_list", "/products")
}

pub(crate) fn offer_list() -> RawList {
    RawList::new("offer_list", "/offers")
}

pub(crate) fn offer_stock_list() -> RawList {
    RawList::new("offer_stock_list", "/offers/stocks").param("filter[details]", "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycrm_api::types;
    use serde_json::json;

    #[test]
    fn a_broken_record_names_its_path_and_id_but_not_its_value() {
        let record = json!({"id": 7, "grand_total": {"amount": "+380501234567"}});
        let Decoded::Broken(q) =
            decode::<types::Order>(EntityKind::Order, "order_list", &record, Utc::now())
        else {
            panic!("an object is no grand total");
        };
        assert_eq!(q.remote_id, Some(7));
        assert_eq!(q.path, "grand_total");
        assert_eq!(q.operation, "order_list");
        assert!(!q.reason.contains("380501234567"), "{}", q.reason);
        assert_eq!(q.local_ref(), "remote:7");

        let fine = json!({"id": 8, "grand_total": "12.50"});
        assert!(matches!(
            decode::<types::Order>(EntityKind::Order, "order_list", &fine, Utc::now()),
            Decoded::Record(_)
        ));
        let nameless = json!({"id": {"x": 1}, "grand_total": []});
        let Decoded::Broken(q) =
            decode::<types::Order>(EntityKind::Order, "order_list", &nameless, Utc::now())
        else {
            panic!("a list is no grand total");
        };
        assert_eq!(q.remote_id, None);
        assert_eq!(q.local_ref(), "remote:?");
    }
}
