//! The warehouse's host: its SQLite schema (`schema.sql`) read and written as canonical
//! records. Everything below the imports is the SQL mapping the host writes, the change log
//! and one `Repository` per kind: 147 lines as rustfmt formats them. Change cursors,
//! tombstones, stock keys, natural keys and the KeyCRM mapping come from
//! `keycrm::sync::host::CanonicalHost`. The plumbing is in `sql.rs`: opening the database,
//! reading rows into serde types by column name (`SELECT ... AS <field>`, `outer.inner` for a
//! nested field), writing serde values as rows (`row(&record, &[(field, column)])`, `upsert`),
//! an order's child rows read and replaced in one call, and the error conversion.

use keycrm::sync::canonical::{
    CanonicalBuyer, CanonicalOffer, CanonicalOrder, CanonicalProduct, CanonicalStock,
};
use keycrm::sync::host::{ChangeLog, HostError, NaturalKey, Repository};
use keycrm::sync::model::EntityKind;
use serde_json::json;

use crate::sql::{Warehouse, numbered, replace_children, row, upsert};

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
            "SELECT max(seq) AS seq, local_id FROM change_log WHERE kind = ?1 AND seq > ?2 \
             GROUP BY local_id",
            &[&kind.as_str(), &(after as i64)],
        )?;
        Ok(changes.into_iter().map(|c| (c.seq, c.local_id)).collect())
    }
}

impl Repository<CanonicalOrder> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalOrder>, HostError> {
        let query = "SELECT id AS local_id, number, status, comment, ordered_at, updated_at, \
                     customer_name AS \"buyer.name\", customer_phone AS \"buyer.phone\", \
                     customer_email AS \"buyer.email\" FROM orders WHERE id = ?1";
        let Some(mut order) = self.one::<CanonicalOrder>(query, id)? else {
            return Ok(None);
        };
        order.lines = self.children("order_lines", id)?;
        order.payments = self.children("payments", id)?;
        let shipping =
            "SELECT *, carrier_id AS carrier_service_id FROM shipping WHERE order_id = ?1";
        order.shipping = self.one(shipping, id)?.unwrap_or_default();
        Ok(Some(order))
    }

    async fn store(&self, o: CanonicalOrder) -> Result<(), HostError> {
        let (b, id) = (&o.buyer, &o.local_id);
        let order = json!({
            "id": id,
            "number": o.number,
            "status": o.status,
            "customer_name": b.name,
            "customer_phone": b.phone,
            "customer_email": b.email,
            "comment": o.comment,
            "ordered_at": o.ordered_at,
            "updated_at": o.updated_at,
        });
        let shipping = (o.shipping != Default::default())
            .then(|| row(&o.shipping, &[("carrier_service_id", "carrier_id")]))
            .transpose()?;
        self.transaction(|tx| {
            upsert(tx, "orders", &["id"], &row(&order, &[])?)?;
            replace_children(tx, "order_lines", id, numbered(&o.lines)?)?;
            replace_children(tx, "payments", id, numbered(&o.payments)?)?;
            replace_children(tx, "shipping", id, shipping)
        })
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM orders WHERE id = ?1", &[&id])
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        self.find_by("SELECT id FROM orders WHERE number = ?1", key)
    }
}

impl Repository<CanonicalBuyer> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalBuyer>, HostError> {
        self.one("SELECT *, id AS local_id FROM customers WHERE id = ?1", id)
    }

    async fn store(&self, c: CanonicalBuyer) -> Result<(), HostError> {
        self.upsert("customers", &["id"], row(&c, &[("local_id", "id")])?)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM customers WHERE id = ?1", &[&id])
    }

    /// Phones and e-mails match as stored: the warehouse stores them normalised.
    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        let query = "SELECT c.id FROM customers c, json_each(c.phones) p WHERE p.value = ?1 \
                     UNION SELECT c.id FROM customers c, json_each(c.emails) e WHERE e.value = ?1";
        self.find_by(query, key)
    }
}

impl Repository<CanonicalProduct> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalProduct>, HostError> {
        self.one("SELECT *, id AS local_id FROM products WHERE id = ?1", id)
    }

    async fn store(&self, p: CanonicalProduct) -> Result<(), HostError> {
        self.upsert("products", &["id"], row(&p, &[("local_id", "id")])?)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM products WHERE id = ?1", &[&id])
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        self.find_by("SELECT id FROM products WHERE sku = ?1", key)
    }
}

impl Repository<CanonicalOffer> for Warehouse {
    async fn get(&self, id: &str) -> Result<Option<CanonicalOffer>, HostError> {
        let query = "SELECT *, id AS local_id, purchase_price AS purchased_price \
                     FROM articles WHERE id = ?1";
        self.one(query, id)
    }

    async fn store(&self, a: CanonicalOffer) -> Result<(), HostError> {
        let renames = [("local_id", "id"), ("purchased_price", "purchase_price")];
        self.upsert("articles", &["id"], row(&a, &renames)?)
    }

    async fn remove(&self, id: &str) -> Result<bool, HostError> {
        self.write("DELETE FROM articles WHERE id = ?1", &[&id])
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        self.find_by("SELECT id FROM articles WHERE sku = ?1", key)
    }
}

impl Repository<CanonicalStock> for Warehouse {
    async fn get(&self, key: &str) -> Result<Option<CanonicalStock>, HostError> {
        self.one(
            "SELECT * FROM stock WHERE warehouse || '/' || sku = ?1",
            key,
        )
    }

    async fn store(&self, s: CanonicalStock) -> Result<(), HostError> {
        self.upsert("stock", &["warehouse", "sku"], row(&s, &[])?)
    }

    async fn remove(&self, key: &str) -> Result<bool, HostError> {
        let statement = "DELETE FROM stock WHERE warehouse || '/' || sku = ?1";
        self.write(statement, &[&key])
    }
}
