//! Stock: the host's level of an offer in a warehouse, its KeyCRM mapping both ways and
//! `PUT /offers/stocks` bodies, and the engine's stock push and pull.

use std::collections::BTreeMap;

use keycrm_api::types;
use keycrm_api::{Decimal, Timestamp};
use serde::{Deserialize, Serialize};

use super::mapping::{MappingError, Mappings};
use super::values::{Out, Reader, chunks, missing};
use tracing::Instrument;

use crate::canonical;
use crate::engine::pull::{Key, PassState, close_span, pass_span};
use crate::engine::push::Work;
use crate::engine::quarantine::{self, Decoded, RawPages};
use crate::engine::{RunReport, SyncEngine, SyncError, batch};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::store::Store;

/// The most stock rows KeyCRM takes in one `PUT /offers/stocks`.
pub const MAX_STOCK_ROWS: usize = 10_000;
/// Stock pushes smaller than this are never held back by the mass-zeroing guard.
pub const GUARD_MIN_ROWS: usize = 10;

/// The stock level of one offer in one warehouse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalStock {
    /// The offer's SKU.
    pub sku: String,
    /// The host's warehouse code, mapped to a KeyCRM warehouse id by [`Mappings`].
    pub warehouse: String,
    /// The absolute quantity on hand.
    pub quantity: Decimal,
}

impl CanonicalStock {
    /// A stable id for the pair: `<warehouse>/<sku>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.warehouse, self.sku)
    }
}

/// The host's stock level as fields (`quantity`).
pub fn stock_fields_from_local(stock: &CanonicalStock) -> Fields {
    let mut out = Out::default();
    out.dec(QUANTITY, Some(stock.quantity));
    out.0
}

/// KeyCRM's stock of an offer in one warehouse as fields; read with `filter[details]=true`.
/// `None` when the answer has no row for that warehouse.
pub fn stock_fields_from_remote(stock: &types::OfferStock, warehouse_id: i64) -> Option<Fields> {
    let row = stock
        .warehouse
        .iter()
        .flatten()
        .find(|w| w.id == Some(warehouse_id))?;
    let mut out = Out::default();
    out.dec(QUANTITY, Some(row.quantity.unwrap_or(Decimal::ZERO)));
    Some(out.0)
}

/// `PUT /offers/stocks` bodies for absolute stock levels: one per KeyCRM warehouse and
/// [`MAX_STOCK_ROWS`] rows (warehouses in id order, rows in input order, rows named by SKU).
/// A SKU given twice for one warehouse is sent once, with its last quantity.
pub fn stock_rows(
    stocks: &[CanonicalStock],
    mappings: &Mappings,
) -> Result<Vec<types::OfferStockUpdate>, MappingError> {
    let mut by_warehouse: BTreeMap<i64, (Vec<&str>, BTreeMap<&str, Decimal>)> = BTreeMap::new();
    for s in stocks {
        let id = mappings.warehouse_id(&s.warehouse)?;
        let (order, quantities) = by_warehouse.entry(id).or_default();
        if quantities.insert(s.sku.as_str(), s.quantity).is_none() {
            order.push(s.sku.as_str());
        }
    }
    let mut out = Vec::new();
    for (warehouse_id, (order, quantities)) in by_warehouse {
        let rows: Vec<types::OfferStockRow> = order
            .into_iter()
            .map(|sku| types::OfferStockRow {
                id: None,
                sku: Some(sku.to_string()),
                quantity: Decimal::new(quantities[sku].value().normalize()),
            })
            .collect();
        for stocks in chunks(rows, MAX_STOCK_ROWS) {
            out.push(types::OfferStockUpdate {
                stocks,
                warehouse_id,
            });
        }
    }
    Ok(out)
}

/// Stock levels as an [`Entity`](super::Entity). A level's local id is `<warehouse>/<sku>`
/// ([`CanonicalStock::key`]); KeyCRM reads and writes levels in bulk
/// ([`stock_fields_from_remote`], [`stock_rows`]), so stock has no [`Bodies`](super::Bodies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stock;

/// A stock level's absolute quantity.
pub const QUANTITY: FieldPath = FieldPath::plain("quantity");

impl super::Entity for Stock {
    const KIND: EntityKind = EntityKind::Stock;
    const FIELDS: &'static [FieldPath] = &[QUANTITY];
    type Local = CanonicalStock;

    fn local_id(local: &CanonicalStock) -> String {
        local.key()
    }

    fn updated_at(_: &CanonicalStock) -> Option<Timestamp> {
        None
    }

    fn fields_from_local(local: &CanonicalStock, _: &Mappings) -> Result<Fields, MappingError> {
        Ok(stock_fields_from_local(local))
    }

    /// `local_id` is `<warehouse>/<sku>`; the quantity is required.
    fn from_fields(
        local_id: &str,
        fields: &Fields,
        _: &Mappings,
    ) -> Result<CanonicalStock, MappingError> {
        let r = Reader::new(EntityKind::Stock, fields);
        let (warehouse, sku) =
            local_id
                .split_once('/')
                .ok_or_else(|| MappingError::InvalidField {
                    kind: EntityKind::Stock,
                    field: "warehouse".to_string(),
                    value: "a local id without `/`".to_string(),
                    expected: "a local id `<warehouse>/<sku>`",
                })?;
        Ok(CanonicalStock {
            sku: sku.to_string(),
            warehouse: warehouse.to_string(),
            quantity: r
                .dec(&QUANTITY)?
                .ok_or_else(|| missing(EntityKind::Stock, &QUANTITY.key()))?,
        })
    }

    fn natural_keys(_: &Fields) -> Vec<(FieldPath, String)> {
        Vec::new()
    }
}

// ------------------------------------------------------------------------------------------
// The engine's push and pull of this kind

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Changed stock levels (against the last pushed snapshot) go out in one
    /// `PUT /offers/stocks` per warehouse and 10,000 rows, unless the push would zero more
    /// than the configured share of its SKUs.
    pub(crate) async fn push_stock(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let mut changed = Vec::new();
        for w in work {
            let base_quantity = w
                .mapping
                .as_ref()
                .and_then(|m| m.base.as_ref())
                .and_then(|b| QUANTITY.get(&b.fields).cloned());
            if base_quantity.as_ref() == QUANTITY.get(&w.local.fields) {
                let fields = w.local.fields.clone();
                self.record_synced(&w, None, Snapshot::new(fields, None))
                    .await?;
                report.unchanged += 1;
                continue;
            }
            changed.push(w);
        }
        if changed.is_empty() {
            return Ok(());
        }
        let stocks: Vec<CanonicalStock> = changed
            .iter()
            .filter_map(|w| {
                let (warehouse, sku) = w.item.local_id.split_once('/')?;
                let quantity: Decimal =
                    serde_json::from_value(QUANTITY.get(&w.local.fields)?.clone()).ok()?;
                Some(CanonicalStock {
                    sku: sku.to_string(),
                    warehouse: warehouse.to_string(),
                    quantity,
                })
            })
            .collect();
        let zeroed = stocks
            .iter()
            .filter(|s| s.quantity == Decimal::ZERO)
            .count();
        let share = self.inner.config.max_zeroed_share;
        if stocks.len() >= GUARD_MIN_ROWS && zeroed as f64 > share * stocks.len() as f64 {
            let error = SyncError::MassZeroing {
                zeroed,
                total: stocks.len(),
                limit: share * 100.0,
            }
            .to_string();
            for w in &changed {
                self.fail(&w.item, &error, report).await?;
            }
            return Ok(());
        }
        if self.dry_run() {
            for w in &changed {
                self.would(w, "set stock".into()).await?;
            }
            return Ok(());
        }
        let bodies = match canonical::stock_rows(&stocks, &self.inner.mappings) {
            Ok(b) => b,
            Err(e) => {
                for w in &changed {
                    self.fail(&w.item, &e.to_string(), report).await?;
                }
                return Ok(());
            }
        };
        // Which outbox records a row stands for: (warehouse id, SKU) -> positions in `changed`.
        let mut by_row: BTreeMap<(i64, String), Vec<usize>> = BTreeMap::new();
        let mut outcome: Vec<Option<Result<(), (bool, String)>>> = vec![None; changed.len()];
        for (i, w) in changed.iter().enumerate() {
            let row = w
                .item
                .local_id
                .split_once('/')
                .and_then(|(warehouse, sku)| {
                    let id = self.inner.mappings.warehouse_id(warehouse).ok()?;
                    Some((id, sku.to_string()))
                });
            match row {
                Some(key) => by_row.entry(key).or_default().push(i),
                None => {
                    outcome[i] = Some(Err((
                        true,
                        "a stock record without warehouse and SKU, or without a quantity".into(),
                    )))
                }
            }
        }
        // One `PUT /offers/stocks` per warehouse (and 10,000 rows). A warehouse's failure
        // never skips another; rows KeyCRM refuses (a 422 naming `stocks.N.sku`, an unknown
        // SKU) are dead-lettered with its message and the others sent again at once.
        for body in bodies {
            let warehouse_id = body.warehouse_id;
            let result =
                batch::send_splitting(EntityKind::Stock, "stocks", &body.stocks, |stocks| {
                    self.call(
                        self.inner
                            .client
                            .offer_stock_update()
                            .body(types::OfferStockUpdate {
                                stocks,
                                warehouse_id,
                            })
                            .send(),
                    )
                })
                .await;
            let mut mark = |row: usize, value: Result<(), (bool, String)>| {
                let sku = body.stocks[row].sku.clone().unwrap_or_default();
                for &i in by_row.get(&(warehouse_id, sku)).into_iter().flatten() {
                    outcome[i] = Some(value.clone());
                }
            };
            for row in result.delivered {
                mark(row, Ok(()));
            }
            for (row, message) in result.rejected {
                mark(row, Err((true, message)));
            }
            if let Some(e) = result.error {
                let e = e.to_string();
                for row in result.failed {
                    mark(row, Err((false, e.clone())));
                }
            }
        }
        for (w, outcome) in changed.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => {
                    let fields = w.local.fields.clone();
                    self.done(&w, None, fields, report).await?;
                }
                Some(Err((true, e))) => self.reject(&w.item, &e, report).await?,
                Some(Err((false, e))) => self.fail(&w.item, &e, report).await?,
                None => {
                    self.reject(
                        &w.item,
                        "a stock record without warehouse and SKU, or without a quantity",
                        report,
                    )
                    .await?
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn pull_stock(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let kind = EntityKind::Stock;
        let span = pass_span(kind, "full");
        let requests_before = self.inner.client.stats().requests;
        let mut records = 0u64;
        let mut state = PassState::default();
        let result = async {
            let already = self.quarantined_of(kind).await?;
            let mut pages = RawPages::new(quarantine::offer_stock_list());
            while let Some(page) = self.next_raw_page(&mut pages).await? {
                // A page's store writes are one transaction.
                let gathering = self.gathering();
                let applied = async {
                    for record in page {
                        records += 1;
                        let stock: types::OfferStock = match quarantine::decode(
                            kind,
                            pages.operation(),
                            &record,
                            self.now(),
                        ) {
                            Decoded::Record(stock) => stock,
                            Decoded::Broken(q) => {
                                state.complete = false;
                                report.quarantined += 1;
                                self.quarantine(&q, &already, &state.broken).await?;
                                state.broken.push(q);
                                continue;
                            }
                        };
                        self.apply_stock(&stock, &mut state).await?;
                    }
                    Ok::<_, SyncError>(())
                }
                .await;
                // What was applied to the host is recorded even when the page stopped early.
                self.commit_gathered(gathering).await?;
                applied?;
            }
            self.apply_stock_levels(&mut state, report).await?;
            Ok::<_, SyncError>(())
        }
        .instrument(span.clone())
        .await;
        close_span(
            &span,
            records,
            self.inner.client.stats().requests - requests_before,
            &result,
            state.complete,
        );
        result?;
        self.note_full_pass(kind, state.complete, report);
        self.settle_quarantine(kind, &state.seen, state.broken, true)
            .await
    }

    /// Notes one offer's stock levels, one per mapped warehouse (applied after the pass).
    async fn apply_stock(
        &self,
        stock: &types::OfferStock,
        state: &mut PassState,
    ) -> Result<(), SyncError> {
        let (Some(offer_id), Some(sku)) = (stock.id, stock.sku.as_deref()) else {
            return Ok(());
        };
        state.seen.insert(offer_id);
        for row in stock.warehouse.iter().flatten() {
            let Some(warehouse_id) = row.id else { continue };
            let Some(code) = self.inner.mappings.warehouse_code(warehouse_id) else {
                continue;
            };
            let Some(fields) = canonical::stock_fields_from_remote(stock, warehouse_id) else {
                continue;
            };
            // Applied once the pass is read whole and has passed the mass-zeroing guard.
            state.levels.push(crate::engine::inbox::StockLevel {
                key: format!("{code}/{sku}"),
                warehouse: code.to_string(),
                offer_id,
                fields,
            });
        }
        Ok(())
    }

    /// Applies a stock pass's levels in one store transaction, unless they would zero more
    /// than the configured share of a warehouse: then nothing is applied and the pass is held
    /// for review (inbound changes pass the mass-zeroing guard too).
    async fn apply_stock_levels(
        &self,
        state: &mut PassState,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let kind = EntityKind::Stock;
        let levels = std::mem::take(&mut state.levels);
        if let Some(reason) = self.zeroing_guard(&levels).await? {
            state.complete = false;
            return self.hold("stock pass", &reason).await;
        }
        let gathering = self.gathering();
        let applied = async {
            for level in levels {
                let result = self
                    .apply_remote(
                        kind,
                        Key::Local(&level.key),
                        level.offer_id,
                        false,
                        Snapshot::new(level.fields, None),
                        report,
                    )
                    .await;
                self.isolated(kind, level.offer_id, result, &mut state.complete)
                    .await?;
            }
            Ok::<_, SyncError>(())
        }
        .await;
        self.commit_gathered(gathering).await?;
        applied
    }
}
