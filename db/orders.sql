-- Orders' own bookkeeping (issue 6), beside the spec's `orders` table, which stays exactly as
-- specified: it has no error column and no per-step state, so those live here.
-- Idempotent like schema.sql (applying it twice is harmless); needs schema.sql's orders table
-- and its set_updated_at() trigger function.

-- The steps between `paid` and the provider's own lifecycle, one row per order and step, with
-- a claim like a page step's (pending -> processing -> completed | failed; a `processing` row
-- untouched for longer than the lease belongs to a dead worker and may be taken over).
--   print_files: interior + cover PDFs written to orders/<order_id>/print/; `result` holds page
--                counts, sizes and checksums (what the print job sends).
--   print_job:   the print job created at the provider (orders.pod_order_id); `result` holds the
--                provider's last status seen; `checked_at` is when a poll last asked.
-- `run` counts print runs: an operator's retry after the provider rejected a job starts run 2,
-- whose job is told apart from run 1's by its line item's external id.
CREATE TABLE IF NOT EXISTS order_steps (
    order_id    UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    step        VARCHAR NOT NULL,
    status      VARCHAR NOT NULL DEFAULT 'pending',
    run         INTEGER NOT NULL DEFAULT 1,
    result      JSONB,
    checked_at  TIMESTAMP WITH TIME ZONE,
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT pk_order_steps PRIMARY KEY (order_id, step),
    CONSTRAINT ck_order_steps_step CHECK (step IN ('print_files', 'print_job')),
    CONSTRAINT ck_order_steps_status CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    CONSTRAINT ck_order_steps_run CHECK (run >= 1)
);

-- An order's history, append-only: every payment event received (applied, ignored as a
-- duplicate or out of order, or rejected), every provider status seen, every failure with its
-- reason (the order's error message is its latest 'failed' event) and every operator retry.
-- (source, event_id) makes a provider's event count once: Stripe delivers at least once, and a
-- print job's status is seen by both polling and the webhook.
CREATE TABLE IF NOT EXISTS order_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    source      VARCHAR NOT NULL,
    event_id    VARCHAR,
    kind        VARCHAR NOT NULL,
    outcome     VARCHAR NOT NULL,
    message     TEXT,
    detail      JSONB,
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_order_events_source_event_id UNIQUE (source, event_id),
    CONSTRAINT ck_order_events_source CHECK (source IN ('stripe', 'lulu', 'local', 'worker', 'operator')),
    CONSTRAINT ck_order_events_outcome
        CHECK (outcome IN ('applied', 'ignored', 'rejected', 'failed', 'retried', 'noted'))
);

CREATE INDEX IF NOT EXISTS ix_order_steps_status ON order_steps (status);
CREATE INDEX IF NOT EXISTS ix_order_steps_checked_at ON order_steps (checked_at);
CREATE INDEX IF NOT EXISTS ix_order_events_order_id ON order_events (order_id);
CREATE INDEX IF NOT EXISTS ix_order_events_created_at ON order_events (created_at);

DROP TRIGGER IF EXISTS trg_order_steps_updated_at ON order_steps;
CREATE TRIGGER trg_order_steps_updated_at BEFORE UPDATE ON order_steps
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
