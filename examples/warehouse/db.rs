//! The warehouse's host: its SQLite schema (`schema.sql`) read and written as canonical
//! records. This file is all the SQL mapping a host writes: change cursors, tombstones, stock
//! keys, natural keys and the KeyCRM mapping come from `keycrm::sync::host::CanonicalHost`.
//! Rows are read by column name into the canonical structs (`SELECT ... AS <field>`).

use std::sync::{Arc, Mutex, MutexGuard};

use keycrm::sync::canonical::{
    CanonicalBuyer, CanonicalContact, CanonicalOffer, CanonicalOrder, CanonicalProduct,
    CanonicalStock,
};
use keycrm::sync::host::{ChangeLog, HostError, NaturalKey, Repository};
use keycrm::sync::model::EntityKind;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ToSql, params};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The warehouse database (one SQLite connection; every call is one short statement or
/// transaction, so it is held only briefly).
#[derive(Clone)]
pub struct Warehouse {
    conn: Arc<Mutex<Connection>>,
}

fn sql(e: impl std::fmt::Display) -> HostError {
    HostError(format!("warehouse database: {e}"))
}

fn text<T: ToString>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(ToString::to_string)
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

    /// Rows as `T`, by column name (`phones` and `emails` hold JSON arrays; NULL is absent).
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
                object.insert(name.clone(), value);
            }
            out.push(serde_json::from_value(Value::Object(object)).map_err(sql)?);
        }
        Ok(out)
    }

    fn one<T: DeserializeOwned>(&self, query: &str, id: &str) -> Result<Option<T>, HostError> {
        Ok(self.rows(query, &[&id])?.into_iter().next())
    }

    fn write(&self, statement: &str, args: &[&dyn ToSql]) -> Result<bool, HostError> {
        Ok(self.conn().execute(statement, args).map_err(sql)? > 0)
    }

    fn find_by(&self, query: &str, value: &str) -> Result<Option<String>, HostError> {
        Ok(self
            .rows::<Map<String, Value>>(query, &[&value])?
            .into_iter()
            .next()
            .and_then(|row| row.get("id")?.as_str().map(str::to_string)))
    }
}

#[derive(serde::Deserialize)]
struct Change {
    seq: u64,
    local_id: String,
}

impl ChangeLog for Warehouse {
    async fn changed_after(
        &self,
        kind: EntityKind,
        after: u64,
    ) -> Result<Vec<(u64, String)>, HostError> {
        let changes: Vec<Change> = self.rows(
            "SELECT max(seq) AS seq, local_id FROM change_log WHERE kind = ?1 AND seq > ?2 GROUP BY local_id",
            &[&kind.as_str(), &(after as i64)],
        )?;
        Ok(changes.into_iter().map(|c| (c.seq, c.local_id)).collect())
    }
}

impl Repository<CanonicalOrder> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalOrder>, HostError> {
        let Some(mut order) = self.one::<CanonicalOrder>(
            "SELECT id AS local_id, number, status, comment, ordered_at, updated_at FROM orders WHERE id = ?1", id)?
        else {
            return Ok(None);
        };
        order.buyer = self
            .one::<CanonicalContact>(
                "SELECT customer_name AS name, customer_phone AS phone, customer_email AS email \
             FROM orders WHERE id = ?1",
                id,
            )?
            .unwrap_or_default();
        order.lines = self.rows(
            "SELECT * FROM order_lines WHERE order_id = ?1 ORDER BY position",
            &[&id],
        )?;
        order.payments = self.rows(
            "SELECT * FROM payments WHERE order_id = ?1 ORDER BY position",
            &[&id],
        )?;
        order.shipping = self.one(
            "SELECT tracking_code, carrier_id AS carrier_service_id, city, address, recipient_name, \
             recipient_phone FROM shipping WHERE order_id = ?1", id)?.unwrap_or_default();
        Ok(Some(order))
    }

    async fn store(&self, o: CanonicalOrder) -> Result<(), HostError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql)?;
        let (b, s, id) = (&o.buyer, &o.shipping, &o.local_id);
        tx.execute(
            "INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO UPDATE SET \
             number = ?2, status = ?3, customer_name = ?4, customer_phone = ?5, customer_email = ?6, \
             comment = ?7, ordered_at = ?8, updated_at = ?9",
            params![id, o.number, o.status, b.name, b.phone, b.email, o.comment, text(&o.ordered_at), text(&o.updated_at)],
        ).map_err(sql)?;
        for table in ["order_lines", "payments", "shipping"] {
            tx.execute(&format!("DELETE FROM {table} WHERE order_id = ?1"), [id])
                .map_err(sql)?;
        }
        for (i, l) in o.lines.iter().enumerate() {
            tx.execute(
                "INSERT INTO order_lines VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    i as i64,
                    l.sku,
                    l.name,
                    l.quantity.to_string(),
                    l.price.to_string()
                ],
            )
            .map_err(sql)?;
        }
        for (i, p) in o.payments.iter().enumerate() {
            tx.execute(
                "INSERT INTO payments VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    i as i64,
                    p.method,
                    p.amount.to_string(),
                    p.status.as_str(),
                    p.reference
                ],
            )
            .map_err(sql)?;
        }
        if *s != Default::default() {
            tx.execute(
                "INSERT INTO shipping VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    s.tracking_code,
                    s.carrier_service_id,
                    s.city,
                    s.address,
                    s.recipient_name,
                    s.recipient_phone
                ],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM orders WHERE id = ?1", &[&id])
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        let NaturalKey::Number(number) = key else {
            return Ok(None);
        };
        self.find_by("SELECT id FROM orders WHERE number = ?1", number)
    }
}

impl Repository<CanonicalBuyer> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalBuyer>, HostError> {
        self.one("SELECT id AS local_id, name, phones, emails, note, updated_at FROM customers WHERE id = ?1", id)
    }

    async fn store(&self, c: CanonicalBuyer) -> Result<(), HostError> {
        let (phones, emails) = (
            serde_json::json!(c.phones).to_string(),
            serde_json::json!(c.emails).to_string(),
        );
        self.write(
            "INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
             name = ?2, phones = ?3, emails = ?4, note = ?5, updated_at = ?6",
            params![
                c.local_id,
                c.name,
                phones,
                emails,
                c.note,
                text(&c.updated_at)
            ],
        )
        .map(drop)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM customers WHERE id = ?1", &[&id])
    }

    /// Phones and e-mails match as stored: the warehouse stores them normalised.
    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        let NaturalKey::Contact { phone, email } = key else {
            return Ok(None);
        };
        let query = "SELECT c.id FROM customers c, json_each(c.phones) p WHERE p.value = ?1 \
                     UNION SELECT c.id FROM customers c, json_each(c.emails) e WHERE e.value = ?1";
        for value in phone.iter().chain(email) {
            if let Some(id) = self.find_by(query, value)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

impl Repository<CanonicalProduct> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalProduct>, HostError> {
        self.one(
            "SELECT id AS local_id, sku, name, description, price, category_id, updated_at \
                  FROM products WHERE id = ?1",
            id,
        )
    }

    async fn store(&self, p: CanonicalProduct) -> Result<(), HostError> {
        self.write(
            "INSERT INTO products VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO UPDATE SET \
             sku = ?2, name = ?3, description = ?4, price = ?5, category_id = ?6, updated_at = ?7",
            params![p.local_id, p.sku, p.name, p.description, text(&p.price), p.category_id, text(&p.updated_at)],
        ).map(drop)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM products WHERE id = ?1", &[&id])
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        let NaturalKey::Sku(sku) = key else {
            return Ok(None);
        };
        self.find_by("SELECT id FROM products WHERE sku = ?1", sku)
    }
}

impl Repository<CanonicalOffer> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalOffer>, HostError> {
        self.one(
            "SELECT id AS local_id, sku, product_sku, price, purchase_price AS purchased_price, \
                  updated_at FROM articles WHERE id = ?1",
            id,
        )
    }

    async fn store(&self, a: CanonicalOffer) -> Result<(), HostError> {
        self.write(
            "INSERT INTO articles VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
             sku = ?2, product_sku = ?3, price = ?4, purchase_price = ?5, updated_at = ?6",
            params![
                a.local_id,
                a.sku,
                a.product_sku,
                text(&a.price),
                text(&a.purchased_price),
                text(&a.updated_at)
            ],
        )
        .map(drop)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM articles WHERE id = ?1", &[&id])
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        let NaturalKey::Sku(sku) = key else {
            return Ok(None);
        };
        self.find_by("SELECT id FROM articles WHERE sku = ?1", sku)
    }
}

impl Repository<CanonicalStock> for Warehouse {
    async fn get(&self, key: &str) -> Result<Option<CanonicalStock>, HostError> {
        self.one(
            "SELECT warehouse, sku, quantity FROM stock WHERE warehouse || '/' || sku = ?1",
            key,
        )
    }

    async fn store(&self, s: CanonicalStock) -> Result<(), HostError> {
        self.write(
            "INSERT INTO stock VALUES (?1, ?2, ?3) ON CONFLICT (warehouse, sku) DO UPDATE SET quantity = ?3",
            params![s.warehouse, s.sku, s.quantity.to_string()],
        ).map(drop)
    }

    async fn remove(&self, key: &str) -> Result<bool, HostError> {
        self.write(
            "DELETE FROM stock WHERE warehouse || '/' || sku = ?1",
            &[&key],
        )
    }
}
