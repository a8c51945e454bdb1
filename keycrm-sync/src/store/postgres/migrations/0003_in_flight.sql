-- keycrm-sync PostgreSQL store, schema version 3: a mapping's note of a write in flight (JSON
-- text of the fields the engine was about to make KeyCRM hold), written before an update is
-- sent and cleared with its bookkeeping. NULL: nothing in flight.
ALTER TABLE mappings ADD COLUMN in_flight TEXT;
