//! The warehouse database's plumbing: opening it, reading rows into serde types by column
//! name, and writing serde values as rows. Nothing here knows a table; the host's mapping
//! (`db.rs`) names the tables and columns.

use std::sync::{Arc, Mutex, MutexGuard};

use keycrm::sync::host::{HostError, NaturalKey};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ToSql, Transaction, params_from_iter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A row to write: column name to value.
pub type Row = Map<String, Value>;

/// The warehouse database (one SQLite connection; every call is one short statement or
/// transaction, so it is held only briefly).
#[derive(Clone)]
pub struct Warehouse {
    conn: Arc<Mutex<Connection>>,
}

/// A database error as the host reports it.
pub fn sql(e: impl std::fmt::Display) -> HostError {
    HostError(format!("warehouse database: {e}"))
}

/// `record` serialised as a row: its fields by name, each `(field, column)` of `renames`
/// stored under `column` instead.
pub fn row(record: &impl Serialize, renames: &[(&str, &str)]) -> Result<Row, HostError> {
    let Value::Object(mut row) = serde_json::to_value(record).map_err(sql)? else {
        return Err(sql("a row must serialise as an object"));
    };
    for (field, column) in renames {
        if let Some(value) = row.remove(*field) {
            row.insert(column.to_string(), value);
        }
    }
    Ok(row)
}

/// `records` as rows, each with its index as `position`.
pub fn numbered<T: Serialize>(records: &[T]) -> Result<Vec<Row>, HostError> {
    let mut rows = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let mut row = row(record, &[])?;
        row.insert("position".into(), Value::from(i));
        rows.push(row);
    }
    Ok(rows)
}

/// The object under `key` in `object`, created empty if absent.
fn nested<'a>(object: &'a mut Row, key: &str) -> &'a mut Row {
    let entry = object
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(inner) => inner,
        _ => unreachable!("made an object above"),
    }
}

/// A JSON value as an SQLite value. Arrays and objects are stored as JSON text; non-integer
/// numbers as their shortest decimal text, so a decimal amount in a TEXT column keeps its
/// digits (SQLite's own REAL to TEXT conversion may not).
fn bind(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Text(n.to_string()),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => SqlValue::Text(value.to_string()),
    }
}

/// Inserts `row` into `table`, or, when a row with the same `key` columns exists, updates
/// that row's other columns. An empty `key` only inserts.
pub fn upsert(conn: &Connection, table: &str, key: &[&str], row: &Row) -> Result<(), HostError> {
    let columns: Vec<&str> = row.keys().map(String::as_str).collect();
    let slots: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let mut statement = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.join(", "),
        slots.join(", ")
    );
    if !key.is_empty() {
        let updates: Vec<String> = columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        statement += &format!(" ON CONFLICT ({}) DO ", key.join(", "));
        statement += &match updates.is_empty() {
            true => "NOTHING".to_string(),
            false => format!("UPDATE SET {}", updates.join(", ")),
        };
    }
    let mut statement = conn.prepare_cached(&statement).map_err(sql)?;
    statement
        .execute(params_from_iter(row.values().map(bind)))
        .map_err(sql)?;
    Ok(())
}

/// Replaces the rows of child `table` that belong to `order_id` by `rows` (each gets its
/// `order_id`).
pub fn replace_children(
    conn: &Connection,
    table: &str,
    order_id: &str,
    rows: impl IntoIterator<Item = Row>,
) -> Result<(), HostError> {
    let delete = format!("DELETE FROM {table} WHERE order_id = ?1");
    conn.execute(&delete, [order_id]).map_err(sql)?;
    for mut row in rows {
        row.insert("order_id".into(), Value::from(order_id));
        upsert(conn, table, &[], &row)?;
    }
    Ok(())
}

impl Warehouse {
    /// Opens (and creates) the database at `path` (`:memory:` for a throwaway one).
    pub fn open(path: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;")?;
        conn.execute_batch(include_str!("schema.sql"))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection, for the warehouse's own work (the scenario's writes, the report).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().expect("warehouse lock poisoned")
    }

    /// Runs `work` in one transaction, committed when it succeeds.
    pub fn transaction(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql)?;
        work(&tx)?;
        tx.commit().map_err(sql)
    }

    /// [`upsert`] on its own.
    pub fn upsert(&self, table: &str, key: &[&str], row: Row) -> Result<(), HostError> {
        upsert(&self.conn(), table, key, &row)
    }

    /// Runs one statement; `true` when it changed a row.
    pub fn write(&self, statement: &str, args: &[&dyn ToSql]) -> Result<bool, HostError> {
        Ok(self.conn().execute(statement, args).map_err(sql)? > 0)
    }

    /// Rows as `T`, by column name (`phones` and `emails` hold JSON arrays; NULL is absent; a
    /// column named `outer.inner` is field `inner` of field `outer`).
    pub fn rows<T: DeserializeOwned>(
        &self,
        query: &str,
        args: &[&dyn ToSql],
    ) -> Result<Vec<T>, HostError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(query).map_err(sql)?;
        let names: Vec<String> = statement
            .column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let mut rows = statement.query(args).map_err(sql)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql)? {
            let mut object = Map::new();
            for (i, name) in names.iter().enumerate() {
                let value = match row.get_ref(i).map_err(sql)? {
                    ValueRef::Integer(n) => Value::from(n),
                    ValueRef::Real(f) => Value::from(f),
                    ValueRef::Text(t) if name == "phones" || name == "emails" => {
                        serde_json::from_slice(t).map_err(sql)?
                    }
                    ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Null | ValueRef::Blob(_) => continue,
                };
                match name.split_once('.') {
                    Some((outer, inner)) => nested(&mut object, outer).insert(inner.into(), value),
                    None => object.insert(name.clone(), value),
                };
            }
            out.push(serde_json::from_value(Value::Object(object)).map_err(sql)?);
        }
        Ok(out)
    }

    /// The rows of child `table` that belong to `order_id`, in `position` order.
    pub fn children<T: DeserializeOwned>(
        &self,
        table: &str,
        order_id: &str,
    ) -> Result<Vec<T>, HostError> {
        let query = format!("SELECT * FROM {table} WHERE order_id = ?1 ORDER BY position");
        self.rows(&query, &[&order_id])
    }

    /// The first row `query` returns for `?1` = `id`.
    pub fn one<T: DeserializeOwned>(&self, query: &str, id: &str) -> Result<Option<T>, HostError> {
        Ok(self.rows(query, &[&id])?.into_iter().next())
    }

    /// The `id` column of the first row `query` returns for `?1` = each value of `key` in
    /// turn (an order's number, a SKU, or a buyer's phone and then e-mail).
    pub fn find_by(&self, query: &str, key: &NaturalKey) -> Result<Option<String>, HostError> {
        let values = match key {
            NaturalKey::Number(value) | NaturalKey::Sku(value) => vec![value],
            NaturalKey::Contact { phone, email } => phone.iter().chain(email).collect(),
        };
        for value in values {
            let row: Option<Row> = self.one(query, value)?;
            if let Some(id) = row.as_ref().and_then(|r| r.get("id")?.as_str()) {
                return Ok(Some(id.to_string()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use keycrm::api::{Decimal, Timestamp};
    use keycrm::sync::canonical::{
        CanonicalBuyer, CanonicalContact, CanonicalLine, CanonicalOffer, CanonicalOrder,
        CanonicalPayment, CanonicalProduct, CanonicalShipping, CanonicalStock, PaymentStatus,
    };
    use keycrm::sync::host::{ChangeLog, NaturalKey, Repository};
    use keycrm::sync::model::EntityKind;

    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn order() -> CanonicalOrder {
        let line = |sku: &str, qty: &str| CanonicalLine {
            sku: sku.into(),
            name: format!("Item {sku}"),
            quantity: dec(qty),
            price: dec("12.50"),
        };
        CanonicalOrder {
            local_id: "O-1".into(),
            number: Some("WH-1".into()),
            status: Some("new".into()),
            buyer: CanonicalContact {
                name: Some("Olena".into()),
                phone: Some("+380501234567".into()),
                email: None,
            },
            lines: vec![line("A", "2"), line("B", "1.5")],
            payments: vec![CanonicalPayment {
                method: "card".into(),
                amount: dec("90247.69"),
                status: PaymentStatus::NotPaid,
                reference: Some("INV-1".into()),
            }],
            shipping: CanonicalShipping {
                tracking_code: Some("TTN-1".into()),
                carrier_service_id: Some(7),
                city: Some("Kyiv".into()),
                ..Default::default()
            },
            comment: Some("fragile".into()),
            ordered_at: Some("2026-01-02 03:04:05".parse::<Timestamp>().unwrap()),
            updated_at: None,
        }
    }

    #[tokio::test]
    async fn an_order_round_trips_and_its_child_rows_are_replaced() {
        let wh = Warehouse::open(":memory:").unwrap();
        let mut o = order();
        wh.store(o.clone()).await.unwrap();
        assert_eq!(
            Repository::<CanonicalOrder>::get(&wh, "O-1").await.unwrap(),
            Some(o.clone())
        );

        o.lines.truncate(1);
        o.payments.clear();
        o.shipping = CanonicalShipping::default();
        o.buyer.email = Some("olena@example.com".into());
        wh.store(o.clone()).await.unwrap();
        assert_eq!(
            Repository::<CanonicalOrder>::get(&wh, "O-1").await.unwrap(),
            Some(o)
        );
        let shipping: Vec<Row> = wh.rows("SELECT * FROM shipping", &[]).unwrap();
        assert!(shipping.is_empty(), "a default shipping leaves no row");

        let key = NaturalKey::Number("WH-1".into());
        let found = Repository::<CanonicalOrder>::find(&wh, &key).await.unwrap();
        assert_eq!(found.as_deref(), Some("O-1"));
        assert!(
            Repository::<CanonicalOrder>::remove(&wh, "O-1")
                .await
                .unwrap()
        );
        assert!(
            !Repository::<CanonicalOrder>::remove(&wh, "O-1")
                .await
                .unwrap()
        );
        let lines: Vec<Row> = wh.rows("SELECT * FROM order_lines", &[]).unwrap();
        assert!(lines.is_empty(), "lines go with their order");
    }

    #[tokio::test]
    async fn catalogue_buyers_and_stock_round_trip() {
        let wh = Warehouse::open(":memory:").unwrap();
        let buyer = CanonicalBuyer {
            local_id: "C-1".into(),
            name: "Taras".into(),
            phones: vec!["+380671112233".into()],
            emails: vec!["taras@example.com".into()],
            note: Some("VIP".into()),
            updated_at: Some("2026-01-02 03:04:05".parse().unwrap()),
        };
        let product = CanonicalProduct {
            local_id: "P-1".into(),
            sku: Some("SKU-1".into()),
            name: "Kettle".into(),
            description: None,
            price: Some(dec("100.00")),
            category_id: Some(3),
            updated_at: None,
        };
        let offer = CanonicalOffer {
            local_id: "A-1".into(),
            sku: "SKU-1".into(),
            product_sku: Some("SKU-1".into()),
            price: Some(dec("0.1")),
            purchased_price: Some(dec("0.07")),
            updated_at: None,
        };
        let stock = CanonicalStock {
            sku: "SKU-1".into(),
            warehouse: "KYIV".into(),
            quantity: dec("4"),
        };
        wh.store(buyer.clone()).await.unwrap();
        wh.store(product.clone()).await.unwrap();
        wh.store(offer.clone()).await.unwrap();
        wh.store(stock.clone()).await.unwrap();
        let stored = Repository::<CanonicalBuyer>::get(&wh, "C-1").await.unwrap();
        assert_eq!(stored, Some(buyer));
        let stored = Repository::<CanonicalProduct>::get(&wh, "P-1")
            .await
            .unwrap();
        assert_eq!(stored, Some(product));
        let stored = Repository::<CanonicalOffer>::get(&wh, "A-1").await.unwrap();
        assert_eq!(stored, Some(offer));
        let stored = Repository::<CanonicalStock>::get(&wh, "KYIV/SKU-1")
            .await
            .unwrap();
        assert_eq!(stored, Some(stock.clone()));

        let moved = CanonicalStock {
            quantity: dec("1"),
            ..stock
        };
        wh.store(moved.clone()).await.unwrap();
        let stored = Repository::<CanonicalStock>::get(&wh, "KYIV/SKU-1")
            .await
            .unwrap();
        assert_eq!(stored, Some(moved));

        let contact = NaturalKey::Contact {
            phone: Some("+380000000000".into()),
            email: Some("taras@example.com".into()),
        };
        let found = Repository::<CanonicalBuyer>::find(&wh, &contact)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some("C-1"));
        let sku = NaturalKey::Sku("SKU-1".into());
        let found = Repository::<CanonicalOffer>::find(&wh, &sku).await.unwrap();
        assert_eq!(found.as_deref(), Some("A-1"));
        let changed = wh.changed_after(EntityKind::Stock, 0).await.unwrap();
        assert_eq!(changed.len(), 1, "one id, its last change: {changed:?}");
        assert_eq!(changed[0].1, "KYIV/SKU-1");
    }
}
