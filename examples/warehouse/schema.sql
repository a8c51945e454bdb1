-- The warehouse's own database: what a small warehouse management system keeps.
-- Every write to a synced table lands in change_log (by trigger), which is all the sync
-- engine needs to know what changed locally.

CREATE TABLE IF NOT EXISTS customers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    phones  TEXT NOT NULL DEFAULT '[]',   -- JSON array, as entered
    emails  TEXT NOT NULL DEFAULT '[]',   -- JSON array, as entered
    note    TEXT,
    updated_at TEXT
);

CREATE TABLE IF NOT EXISTS products (
    id          TEXT PRIMARY KEY,
    sku         TEXT UNIQUE,
    name        TEXT NOT NULL,
    description TEXT,
    price       TEXT,
    category_id INTEGER,
    updated_at  TEXT
);

-- Articles: the sellable units (KeyCRM's offers), each of one product.
CREATE TABLE IF NOT EXISTS articles (
    id             TEXT PRIMARY KEY,
    sku            TEXT NOT NULL UNIQUE,
    product_sku    TEXT,
    price          TEXT,
    purchase_price TEXT,
    updated_at     TEXT
);

CREATE TABLE IF NOT EXISTS stock (
    warehouse TEXT NOT NULL,
    sku       TEXT NOT NULL,
    quantity  TEXT NOT NULL,
    PRIMARY KEY (warehouse, sku)
);

CREATE TABLE IF NOT EXISTS orders (
    id             TEXT PRIMARY KEY,
    number         TEXT UNIQUE,
    status         TEXT,
    customer_name  TEXT,
    customer_phone TEXT,
    customer_email TEXT,
    comment        TEXT,
    ordered_at     TEXT,
    updated_at     TEXT
);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sku      TEXT NOT NULL,
    name     TEXT NOT NULL,
    quantity TEXT NOT NULL,
    price    TEXT NOT NULL,
    PRIMARY KEY (order_id, position)
);

CREATE TABLE IF NOT EXISTS payments (
    order_id  TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    method    TEXT NOT NULL,
    amount    TEXT NOT NULL,
    status    TEXT NOT NULL,
    reference TEXT,
    PRIMARY KEY (order_id, position)
);

CREATE TABLE IF NOT EXISTS shipping (
    order_id        TEXT PRIMARY KEY REFERENCES orders(id) ON DELETE CASCADE,
    tracking_code   TEXT,
    carrier_id      INTEGER,
    city            TEXT,
    address         TEXT,
    recipient_name  TEXT,
    recipient_phone TEXT
);

CREATE TABLE IF NOT EXISTS change_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    local_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS change_log_kind ON change_log (kind, seq);

CREATE TRIGGER IF NOT EXISTS customers_ins AFTER INSERT ON customers
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('buyer', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS customers_upd AFTER UPDATE ON customers
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('buyer', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS products_ins AFTER INSERT ON products
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('product', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS products_upd AFTER UPDATE ON products
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('product', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS articles_ins AFTER INSERT ON articles
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('offer', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS articles_upd AFTER UPDATE ON articles
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('offer', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS stock_ins AFTER INSERT ON stock
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('stock', NEW.warehouse || '/' || NEW.sku); END;
CREATE TRIGGER IF NOT EXISTS stock_upd AFTER UPDATE ON stock
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('stock', NEW.warehouse || '/' || NEW.sku); END;
CREATE TRIGGER IF NOT EXISTS orders_ins AFTER INSERT ON orders
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS orders_upd AFTER UPDATE ON orders
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS order_lines_ins AFTER INSERT ON order_lines
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.order_id); END;
CREATE TRIGGER IF NOT EXISTS order_lines_upd AFTER UPDATE ON order_lines
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.order_id); END;
CREATE TRIGGER IF NOT EXISTS payments_ins AFTER INSERT ON payments
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.order_id); END;
CREATE TRIGGER IF NOT EXISTS payments_upd AFTER UPDATE ON payments
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.order_id); END;
CREATE TRIGGER IF NOT EXISTS shipping_ins AFTER INSERT ON shipping
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.order_id); END;
CREATE TRIGGER IF NOT EXISTS shipping_upd AFTER UPDATE ON shipping
    BEGIN INSERT INTO change_log (kind, local_id) VALUES ('order', NEW.order_id); END;
