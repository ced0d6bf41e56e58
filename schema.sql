-- Schema of the AI Story Creator worker backend (spec: docs/database-schema.md).
-- Idempotent: applying it twice is harmless. Core PostgreSQL 13+ only (gen_random_uuid() is core).
-- The four spec tables are exactly as specified; `users` is the minimal table the spec refers to;
-- `story_outlines` and `step_errors` are the pipeline's own bookkeeping.

-- One trigger function keeps updated_at current for every writer (ORM, raw SQL, scripts).
-- A writer that sets updated_at itself (a migration, a test simulating a stale row) is respected.
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TABLE IF NOT EXISTS users (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email       VARCHAR NOT NULL,
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_users_email UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS photos (
    id                    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    storage_provider      VARCHAR NOT NULL,
    bucket                VARCHAR,
    object_key            VARCHAR NOT NULL,
    filename              VARCHAR NOT NULL,
    content_type          VARCHAR NOT NULL,
    status                VARCHAR NOT NULL DEFAULT 'pending_upload',
    ai_processing_status  VARCHAR DEFAULT 'pending',
    ai_error_message      TEXT,
    detected_objects      JSONB,
    detected_labels       JSONB,
    face_details          JSONB,
    created_at            TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at            TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_photos_object_key UNIQUE (object_key),
    CONSTRAINT ck_photos_status CHECK (status IN ('pending_upload', 'uploaded', 'failed', 'deleted')),
    CONSTRAINT ck_photos_ai_processing_status
        CHECK (ai_processing_status IN ('pending', 'processing', 'completed', 'failed'))
);

CREATE TABLE IF NOT EXISTS stories (
    id                    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    child_name            VARCHAR NOT NULL,
    -- No CHECK on child_age: the external API inserts what the parent typed, and the worker
    -- fails the story with a readable message (the row is where the parent sees why).
    child_age             INTEGER NOT NULL,
    story_theme           VARCHAR NOT NULL,
    -- NO ACTION (README "Personal data"): another family's story refuses the deletion of a photo.
    protagonist_photo_id  UUID NOT NULL REFERENCES photos (id),
    title                 VARCHAR,
    status                VARCHAR NOT NULL DEFAULT 'pending',
    error_message         TEXT,
    created_at            TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at            TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT ck_stories_status CHECK (status IN ('pending', 'processing', 'completed', 'failed'))
);

CREATE TABLE IF NOT EXISTS story_pages (
    id                       UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    story_id                 UUID NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    page_number              INTEGER NOT NULL,
    text                     TEXT,
    base_image_key           VARCHAR,
    personalized_image_key   VARCHAR,
    text_generation_status   VARCHAR DEFAULT 'pending',
    image_generation_status  VARCHAR DEFAULT 'pending',
    personalization_status   VARCHAR DEFAULT 'pending',
    created_at               TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at               TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_story_pages_story_id_page_number UNIQUE (story_id, page_number),
    CONSTRAINT ck_story_pages_page_number CHECK (page_number >= 1),
    CONSTRAINT ck_story_pages_text_generation_status
        CHECK (text_generation_status IN ('pending', 'processing', 'completed', 'failed')),
    CONSTRAINT ck_story_pages_image_generation_status
        CHECK (image_generation_status IN ('pending', 'processing', 'completed', 'failed')),
    CONSTRAINT ck_story_pages_personalization_status
        CHECK (personalization_status IN ('pending', 'processing', 'completed', 'failed'))
);

CREATE TABLE IF NOT EXISTS orders (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: an order is a financial record and must not vanish with a user or a story.
    user_id            UUID NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    story_id           UUID NOT NULL REFERENCES stories (id) ON DELETE RESTRICT,
    product_type       VARCHAR NOT NULL,
    status             VARCHAR NOT NULL DEFAULT 'pending_payment',
    amount             INTEGER NOT NULL,
    currency           VARCHAR(3) NOT NULL,
    shipping_address   JSONB,
    payment_provider   VARCHAR,
    payment_intent_id  VARCHAR,
    pod_provider       VARCHAR,
    pod_order_id       VARCHAR,
    tracking_number    VARCHAR,
    paid_at            TIMESTAMP WITH TIME ZONE,
    fulfilled_at       TIMESTAMP WITH TIME ZONE,
    shipped_at         TIMESTAMP WITH TIME ZONE,
    created_at         TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at         TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_orders_payment_intent_id UNIQUE (payment_intent_id),
    CONSTRAINT ck_orders_status
        CHECK (status IN ('pending_payment', 'paid', 'fulfilled', 'shipped', 'failed')),
    CONSTRAINT ck_orders_amount CHECK (amount >= 0),
    CONSTRAINT ck_orders_currency CHECK (currency ~ '^[A-Za-z]{3}$')
);

-- The outline written by stories.generate: one plan line per page, read by every page's
-- text step (pages are written in parallel on different workers).
CREATE TABLE IF NOT EXISTS story_outlines (
    story_id    UUID PRIMARY KEY REFERENCES stories (id) ON DELETE CASCADE,
    title       VARCHAR NOT NULL,
    style       VARCHAR NOT NULL DEFAULT '',
    beats       JSONB NOT NULL,
    -- The face of the photo this story uses (pipeline/stories/faces.py): index into the photo's
    -- face_details.faces, its box, the rule that chose it, and a notice for the parent when the
    -- photo had several faces. Every page's personalization uses exactly this face.
    protagonist_face JSONB,
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT ck_story_outlines_beats CHECK (jsonb_typeof(beats) = 'array')
);
-- Databases created before the column existed.
ALTER TABLE story_outlines ADD COLUMN IF NOT EXISTS protagonist_face JSONB;

-- One row per failed attempt of a step: the history operators read (`status`, `retry`).
-- The spec's page rows have no error column; the story's error_message holds the latest reason.
CREATE TABLE IF NOT EXISTS step_errors (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    story_id    UUID REFERENCES stories (id) ON DELETE CASCADE,
    page_id     UUID REFERENCES story_pages (id) ON DELETE CASCADE,
    photo_id    UUID REFERENCES photos (id) ON DELETE CASCADE,
    stage       VARCHAR NOT NULL,
    permanent   BOOLEAN NOT NULL,
    message     TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    task_id     VARCHAR,
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT ck_step_errors_stage
        CHECK (stage IN ('analysis', 'outline', 'text', 'image', 'personalization', 'finish'))
);

-- Remote jobs of a page step (Replicate predictions): created at most once per step run,
-- recorded *before* the provider is asked (status 'creating', no external_id yet), so a run
-- that dies anywhere after that finds the job again instead of paying for a second one.
-- The partial unique index is the guarantee: one live job per page step, whatever the races.
-- 'expired': the job succeeded but its output was gone before it was copied (Replicate deletes
-- outputs after about an hour); error_message says how it showed, and a new job of the same
-- step replaced it, whose `recreation` counts the replacements in a row (0: the step's first
-- job; bounded by JOB_OUTPUT_RECREATIONS, then the step fails).
CREATE TABLE IF NOT EXISTS provider_jobs (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    page_id        UUID NOT NULL REFERENCES story_pages (id) ON DELETE CASCADE,
    stage          VARCHAR NOT NULL,
    provider       VARCHAR NOT NULL,
    external_id    VARCHAR,
    input_sha256   VARCHAR(64) NOT NULL,
    status         VARCHAR NOT NULL DEFAULT 'creating',
    error_message  TEXT,
    polls          INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    recreation     INTEGER NOT NULL DEFAULT 0,
    -- Celery task ids (pipeline/stories/job_webhooks.py): the message whose run created the job
    -- (its poll), the follow a verified completion webhook sent (with woken_at: set once, by the
    -- first delivery that found the job running; later ones are no-ops), and the run that ended
    -- the job and completed its page step. When a webhook sent a follow, the poll and that follow
    -- carry the same chain: only the completer's message moves it on, the other one stops.
    started_by     VARCHAR,
    woken_at       TIMESTAMP WITH TIME ZONE,
    woken_by       VARCHAR,
    finished_by    VARCHAR,
    created_at     TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at     TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT ck_provider_jobs_stage CHECK (stage IN ('image', 'personalization')),
    CONSTRAINT ck_provider_jobs_status
        CHECK (status IN ('creating', 'running', 'succeeded', 'failed', 'canceled', 'expired')),
    CONSTRAINT ck_provider_jobs_recreation CHECK (recreation >= 0)
);
-- Databases made before 'expired' and `recreation` existed (idempotent; a no-op once done).
ALTER TABLE provider_jobs ADD COLUMN IF NOT EXISTS recreation INTEGER NOT NULL DEFAULT 0;
-- Databases made before completion webhooks (idempotent).
ALTER TABLE provider_jobs ADD COLUMN IF NOT EXISTS started_by VARCHAR;
ALTER TABLE provider_jobs ADD COLUMN IF NOT EXISTS woken_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE provider_jobs ADD COLUMN IF NOT EXISTS woken_by VARCHAR;
ALTER TABLE provider_jobs ADD COLUMN IF NOT EXISTS finished_by VARCHAR;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_provider_jobs_status'
                    AND pg_get_constraintdef(oid) LIKE '%expired%') THEN
        ALTER TABLE provider_jobs DROP CONSTRAINT IF EXISTS ck_provider_jobs_status;
        ALTER TABLE provider_jobs ADD CONSTRAINT ck_provider_jobs_status
            CHECK (status IN ('creating', 'running', 'succeeded', 'failed', 'canceled', 'expired'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_provider_jobs_recreation') THEN
        ALTER TABLE provider_jobs ADD CONSTRAINT ck_provider_jobs_recreation CHECK (recreation >= 0);
    END IF;
END;
$$;
CREATE UNIQUE INDEX IF NOT EXISTS uq_provider_jobs_live ON provider_jobs (page_id, stage)
    WHERE status IN ('creating', 'running');
CREATE UNIQUE INDEX IF NOT EXISTS uq_provider_jobs_external_id ON provider_jobs (provider, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_provider_jobs_page_id ON provider_jobs (page_id);

-- Indexes: every FK and status column (spec), GIN where JSONB is searched.
CREATE INDEX IF NOT EXISTS ix_photos_user_id ON photos (user_id);
CREATE INDEX IF NOT EXISTS ix_photos_status ON photos (status);
CREATE INDEX IF NOT EXISTS ix_photos_ai_processing_status ON photos (ai_processing_status);
-- "photos showing X": detected_labels @> '[{"name": "Smile"}]'. face_details is read by id only.
CREATE INDEX IF NOT EXISTS ix_photos_detected_labels ON photos USING gin (detected_labels jsonb_path_ops);
CREATE INDEX IF NOT EXISTS ix_photos_detected_objects ON photos USING gin (detected_objects jsonb_path_ops);

CREATE INDEX IF NOT EXISTS ix_stories_user_id ON stories (user_id);
CREATE INDEX IF NOT EXISTS ix_stories_story_theme ON stories (story_theme);
CREATE INDEX IF NOT EXISTS ix_stories_protagonist_photo_id ON stories (protagonist_photo_id);
CREATE INDEX IF NOT EXISTS ix_stories_status ON stories (status);

CREATE INDEX IF NOT EXISTS ix_story_pages_story_id ON story_pages (story_id);
CREATE INDEX IF NOT EXISTS ix_story_pages_page_number ON story_pages (page_number);
CREATE INDEX IF NOT EXISTS ix_story_pages_text_generation_status ON story_pages (text_generation_status);
CREATE INDEX IF NOT EXISTS ix_story_pages_image_generation_status ON story_pages (image_generation_status);
CREATE INDEX IF NOT EXISTS ix_story_pages_personalization_status ON story_pages (personalization_status);

CREATE INDEX IF NOT EXISTS ix_orders_user_id ON orders (user_id);
CREATE INDEX IF NOT EXISTS ix_orders_story_id ON orders (story_id);
CREATE INDEX IF NOT EXISTS ix_orders_product_type ON orders (product_type);
CREATE INDEX IF NOT EXISTS ix_orders_status ON orders (status);
CREATE INDEX IF NOT EXISTS ix_orders_pod_order_id ON orders (pod_order_id);
-- Operators query a delivery address by country/postcode when a carrier reports a problem.
CREATE INDEX IF NOT EXISTS ix_orders_shipping_address ON orders USING gin (shipping_address jsonb_path_ops);

CREATE INDEX IF NOT EXISTS ix_step_errors_story_id ON step_errors (story_id);
CREATE INDEX IF NOT EXISTS ix_step_errors_page_id ON step_errors (page_id);
CREATE INDEX IF NOT EXISTS ix_step_errors_photo_id ON step_errors (photo_id);
CREATE INDEX IF NOT EXISTS ix_step_errors_created_at ON step_errors (created_at);

-- Orders' own bookkeeping, beside the spec's `orders` table, which stays exactly as specified
-- (it has no error column and no per-step state, so those live here).
--
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

-- Fencing tokens (Kleppmann's "fencing tokens"; README "At least once"): the worker's own
-- bookkeeping beside the API's columns (the API never writes them; their defaults fit its
-- inserts). Every claim of a step adds one to its row's `claim_token` and hands the new value
-- to the holder; every later write of that step (complete, release, fail, reserving or
-- recording a remote job) names the token it holds and does nothing unless it is still the
-- row's: a worker that paused past its lease (GC pause, frozen VM, partition) and wakes after
-- another took over cannot undo or redo the new holder's work. One token per row: a row has at
-- most one step in flight (a page's three steps run one after another).
-- `takeovers` counts the claims taken from a silent holder (processing past the lease) since
-- the step last completed or an operator retried it; at STEP_MAX_TAKEOVERS the step fails
-- ("crashed its worker N times") instead of taking down one worker after another.
ALTER TABLE photos ADD COLUMN IF NOT EXISTS claim_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE photos ADD COLUMN IF NOT EXISTS takeovers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS claim_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS takeovers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE story_pages ADD COLUMN IF NOT EXISTS claim_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE story_pages ADD COLUMN IF NOT EXISTS takeovers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE order_steps ADD COLUMN IF NOT EXISTS claim_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_steps ADD COLUMN IF NOT EXISTS takeovers INTEGER NOT NULL DEFAULT 0;
-- The story's completion (stories.finish) is claimed on its outline row with a lease of its
-- own (`finish_claimed_at`), not by holding the story's row lock while the book is written: a
-- finisher frozen mid-book cannot keep the story `processing`; after the lease another takes
-- over, and only the holder of `finish_token` may complete the story.
ALTER TABLE story_outlines ADD COLUMN IF NOT EXISTS finish_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE story_outlines ADD COLUMN IF NOT EXISTS finish_takeovers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE story_outlines ADD COLUMN IF NOT EXISTS finish_claimed_at TIMESTAMP WITH TIME ZONE;
-- The page step's claim a remote job was made under (story_pages.claim_token): only that
-- holder may start it or end it; a takeover adopts the live job (the token moves with it).
ALTER TABLE provider_jobs ADD COLUMN IF NOT EXISTS claim_token BIGINT NOT NULL DEFAULT 0;

-- Operators' queries (backfill and the sweeper: pipeline/operations/backfill.py, sweep.py; their
-- SQL in db/operations.py) look for the few unfinished rows among many finished ones. Partial
-- indexes hold only those rows, so they stay small and those queries stay fast however many
-- stories are done (EXPLAIN at 100,000 stories: tests/test_scale.py).
CREATE INDEX IF NOT EXISTS ix_photos_unfinished ON photos (id)
    WHERE ai_processing_status IS DISTINCT FROM 'completed';
CREATE INDEX IF NOT EXISTS ix_stories_unfinished ON stories (id)
    WHERE status IN ('pending', 'processing');
-- Fair turns between families (README; db/slots.py): an account's stories in flight, counted
-- under the account's advisory lock at each start's claim (USER_STORIES_IN_FLIGHT), and its
-- waiting stories, oldest first (the hand-off when one of them ends). Both hold only the few
-- unfinished rows.
CREATE INDEX IF NOT EXISTS ix_stories_user_in_flight ON stories (user_id)
    WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS ix_stories_user_pending ON stories (user_id, created_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS ix_story_pages_text_unfinished ON story_pages (id)
    WHERE text_generation_status IS DISTINCT FROM 'completed';
CREATE INDEX IF NOT EXISTS ix_story_pages_image_unfinished ON story_pages (id)
    WHERE image_generation_status IS DISTINCT FROM 'completed';
CREATE INDEX IF NOT EXISTS ix_story_pages_personalization_unfinished ON story_pages (id)
    WHERE personalization_status IS DISTINCT FROM 'completed';
-- retry --since/--stage: the latest permanent errors.
CREATE INDEX IF NOT EXISTS ix_step_errors_permanent ON step_errors (created_at) WHERE permanent;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'photos', 'stories', 'story_pages', 'orders', 'story_outlines', 'provider_jobs', 'order_steps']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS trg_%1$s_updated_at ON %1$I', t);
        EXECUTE format('CREATE TRIGGER trg_%1$s_updated_at BEFORE UPDATE ON %1$I '
                       'FOR EACH ROW EXECUTE FUNCTION set_updated_at()', t);
    END LOOP;
END;
$$;

-- ============================================================================================
-- Events for the web app (issue 13, part 1; README "Events (webhooks)"; docs/DESIGN.md).
-- A transactional outbox: row triggers on the tables whose transitions a parent or the web app
-- cares about insert the event in the same statement as the transition, whoever writes it (a
-- worker, the sweeper, an operator's retry, hand-written SQL), so there is no event without its
-- transition and no transition without its event. Delivery is the workers' business
-- (pipeline/events/): one `event_deliveries` row per event and endpoint, claimed with a lease,
-- strictly in order per ordering key, each attempt recorded in `event_attempts`.
CREATE TABLE IF NOT EXISTS outbox_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the order events are sent in
    -- The id receivers see (webhook-id, the same on every retry): evt_<32 hex>.
    id            VARCHAR NOT NULL DEFAULT ('evt_' || replace(gen_random_uuid()::text, '-', '')),
    type          VARCHAR NOT NULL,
    -- story:<id> (story and page events), order:<id>, photo:<id>: delivered one after another.
    ordering_key  VARCHAR NOT NULL,
    story_id      UUID,
    order_id      UUID,
    photo_id      UUID,
    -- ids and public facts only: no names (a title may carry the child's name), no photo, no face data
    payload       JSONB NOT NULL,
    occurred_at   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT uq_outbox_events_id UNIQUE (id)
);
CREATE INDEX IF NOT EXISTS ix_outbox_events_story_id ON outbox_events (story_id) WHERE story_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_outbox_events_order_id ON outbox_events (order_id) WHERE order_id IS NOT NULL;

-- Each configured endpoint (a webhook URL, or celery:<task> for the broker) and how far its
-- deliveries were created: events after `cursor` (outbox_events.seq) get a delivery row.
CREATE TABLE IF NOT EXISTS event_endpoints (
    endpoint    VARCHAR PRIMARY KEY,
    cursor      BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
-- The cursor's next position and the xid of the run that saw it (db/events.py materialize): the
-- cursor moves there once every transaction older than that xid has ended, so an event committed
-- late (a transaction held open for minutes) is never passed over.
ALTER TABLE event_endpoints ADD COLUMN IF NOT EXISTS candidate BIGINT;
ALTER TABLE event_endpoints ADD COLUMN IF NOT EXISTS candidate_xid BIGINT;

CREATE TABLE IF NOT EXISTS event_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq        BIGINT NOT NULL REFERENCES outbox_events (seq) ON DELETE CASCADE,
    endpoint         VARCHAR NOT NULL,
    ordering_key     VARCHAR NOT NULL,
    status           VARCHAR NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    lease_until      TIMESTAMP WITH TIME ZONE,
    claim_token      BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    delivered_at     TIMESTAMP WITH TIME ZONE,
    created_at       TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_event_deliveries_event_endpoint UNIQUE (event_seq, endpoint),
    CONSTRAINT ck_event_deliveries_status CHECK (status IN ('pending', 'delivering', 'delivered', 'dead'))
);
-- The open deliveries only: the claim's queries stay fast however many were delivered.
CREATE INDEX IF NOT EXISTS ix_event_deliveries_open ON event_deliveries (endpoint, ordering_key, event_seq)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX IF NOT EXISTS ix_event_deliveries_due ON event_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');

CREATE TABLE IF NOT EXISTS event_attempts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  BIGINT NOT NULL REFERENCES event_deliveries (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    status_code  INTEGER,
    latency_ms   INTEGER,
    error        TEXT,
    created_at   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_event_attempts_delivery_id ON event_attempts (delivery_id);

CREATE OR REPLACE FUNCTION record_outbox_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text := TG_ARGV[0];
    reason text;
    story_user uuid;
    pdf_key text;
    html_key text;
BEGIN
    IF TG_TABLE_NAME = 'stories' THEN
        -- Deferred to commit like the orders' (below): a completion's book keys are recorded by a
        -- later statement of the same transaction (db/redo.py book_made), so they are read now.
        IF NEW.status = 'completed' THEN
            SELECT book_pdf_key, book_html_key INTO pdf_key, html_key FROM stories WHERE id = NEW.id;
        END IF;
        INSERT INTO outbox_events (type, ordering_key, story_id, payload)
        VALUES (kind, 'story:' || NEW.id, NEW.id, jsonb_strip_nulls(jsonb_build_object(
            'story_id', NEW.id, 'user_id', NEW.user_id, 'status', NEW.status,
            'page_count', (SELECT count(*) FROM story_pages WHERE story_id = NEW.id),
            -- the redo section's columns (plpgsql resolves them when the trigger runs): which
            -- revision of the book this is (1: the first), and its storage keys once completed
            'revision', NEW.revision,
            'book_pdf_key', pdf_key, 'book_html_key', html_key,
            'reason', CASE WHEN NEW.status = 'failed' THEN NEW.error_message END,
            'occurred_at', clock_timestamp())));
    ELSIF TG_TABLE_NAME = 'story_pages' THEN
        SELECT user_id INTO story_user FROM stories WHERE id = NEW.story_id;
        INSERT INTO outbox_events (type, ordering_key, story_id, payload)
        VALUES (kind, 'story:' || NEW.story_id, NEW.story_id, jsonb_build_object(
            'story_id', NEW.story_id, 'user_id', story_user, 'page_id', NEW.id,
            'page_number', NEW.page_number, 'status', NEW.personalization_status,
            'revision', NEW.revision, 'image_key', NEW.personalized_image_key,
            'occurred_at', clock_timestamp()));
    ELSIF TG_TABLE_NAME = 'page_redos' THEN
        -- A redo's outcome (the redo section's table): completed, failed (the page and book were
        -- put back; `reason` says why) or refused (`reason`: the parent's message). Never the hint.
        SELECT user_id INTO story_user FROM stories WHERE id = NEW.story_id;
        INSERT INTO outbox_events (type, ordering_key, story_id, payload)
        VALUES (kind, 'story:' || NEW.story_id, NEW.story_id, jsonb_strip_nulls(jsonb_build_object(
            'redo_id', NEW.id, 'story_id', NEW.story_id, 'user_id', story_user, 'page_id', NEW.page_id,
            'page_number', NEW.page_number, 'from_stage', NEW.from_stage, 'revision', NEW.revision,
            'status', NEW.status, 'reason', CASE WHEN NEW.status IN ('failed', 'refused') THEN NEW.message END,
            'occurred_at', clock_timestamp())));
    ELSIF TG_TABLE_NAME = 'photos' THEN
        INSERT INTO outbox_events (type, ordering_key, photo_id, payload)
        VALUES (kind, 'photo:' || NEW.id, NEW.id, jsonb_strip_nulls(jsonb_build_object(
            'photo_id', NEW.id, 'user_id', NEW.user_id, 'status', NEW.ai_processing_status,
            'reason', NEW.ai_error_message, 'occurred_at', clock_timestamp())));
    ELSIF TG_TABLE_NAME = 'orders' THEN
        -- A deferred constraint trigger: it runs at commit, after the failure's order_events row
        -- (db/orders.py writes it in the same statement; any writer's same transaction will do).
        IF kind = 'order.failed' THEN
            SELECT message INTO reason FROM order_events
             WHERE order_id = NEW.id AND outcome = 'failed' ORDER BY created_at DESC, id DESC LIMIT 1;
        END IF;
        INSERT INTO outbox_events (type, ordering_key, order_id, story_id, payload)
        VALUES (kind, 'order:' || NEW.id, NEW.id, NEW.story_id, jsonb_strip_nulls(jsonb_build_object(
            'order_id', NEW.id, 'story_id', NEW.story_id, 'user_id', NEW.user_id, 'status', kind_status(kind),
            'amount', NEW.amount, 'currency', upper(NEW.currency), 'product_type', NEW.product_type,
            'tracking_number', CASE WHEN kind = 'order.shipped' THEN NEW.tracking_number END,
            'reason', reason, 'occurred_at', clock_timestamp())));
    END IF;
    RETURN NULL;
END;
$$;

-- 'order.shipped' -> 'shipped': the status the event announces (the row may have moved on since).
CREATE OR REPLACE FUNCTION kind_status(kind text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT split_part(kind, '.', 2) $$;

DO $$
DECLARE
    -- table, status column, value, event type
    spec text[] := ARRAY[
        ['stories', 'status', 'completed', 'story.completed'],
        ['stories', 'status', 'failed', 'story.failed'],
        ['story_pages', 'personalization_status', 'completed', 'page.completed'],
        ['photos', 'ai_processing_status', 'failed', 'photo.failed'],
        ['orders', 'status', 'paid', 'order.paid'],
        ['orders', 'status', 'fulfilled', 'order.fulfilled'],
        ['orders', 'status', 'shipped', 'order.shipped'],
        ['orders', 'status', 'failed', 'order.failed']];
    i int;
    name text;
    kind_sql text;
BEGIN
    FOR i IN 1 .. array_length(spec, 1) LOOP
        name := format('trg_%s_event_%s', spec[i][1], replace(spec[i][4], '.', '_'));
        -- orders and stories: deferred to commit (see record_outbox_event); pages and photos in
        -- the statement itself (a story's completion still follows its pages' events: those
        -- committed before it, or, in one transaction, were written before the commit).
        kind_sql := CASE WHEN spec[i][1] IN ('orders', 'stories')
                         THEN 'CREATE CONSTRAINT TRIGGER %1$s_%5$s AFTER %6$s ON %2$I DEFERRABLE INITIALLY DEFERRED '
                         ELSE 'CREATE TRIGGER %1$s_%5$s AFTER %6$s ON %2$I ' END;
        EXECUTE format('DROP TRIGGER IF EXISTS %1$s_upd ON %2$I', name, spec[i][1]);
        EXECUTE format('DROP TRIGGER IF EXISTS %1$s_ins ON %2$I', name, spec[i][1]);
        EXECUTE format(kind_sql || 'FOR EACH ROW WHEN (OLD.%3$I IS DISTINCT FROM NEW.%3$I AND NEW.%3$I = %4$L) '
                       'EXECUTE FUNCTION record_outbox_event(%7$L)',
                       name, spec[i][1], spec[i][2], spec[i][3], 'upd', 'UPDATE', spec[i][4]);
        EXECUTE format(kind_sql || 'FOR EACH ROW WHEN (NEW.%3$I = %4$L) EXECUTE FUNCTION record_outbox_event(%7$L)',
                       name, spec[i][1], spec[i][2], spec[i][3], 'ins', 'INSERT', spec[i][4]);
    END LOOP;
END;
$$;
-- The dead deliveries only (the exporter's storycreator_event_deliveries_dead, db/backlog.py): counted
-- at every scrape period however many deliveries were delivered.
CREATE INDEX IF NOT EXISTS ix_event_deliveries_dead ON event_deliveries (id) WHERE status = 'dead';
-- ============================================================ end of the events section ======

-- The character profile (issue 13, "the same child on every page"; the worker's own column,
-- pipeline/providers/character.py): per usable face of the photo, aligned with
-- face_details.faces, how the child looks for painting (hair colour and length, a measured skin
-- colour and its lightness bucket, glasses): {"version": 1, "faces": [profile | null, ...]}.
-- Never the name, age, gender or ethnicity. It is face data: written with face_details by the
-- analysis' one guarded completion, and cleared with it (db/photos.py clear_face_data).
ALTER TABLE photos ADD COLUMN IF NOT EXISTS character_profile JSONB;
-- ============================================================================================

-- ===== Redoing a page (issue 13; README "Redoing a page"; db/redo.py) ======================
-- Worker bookkeeping beside the API's columns (defaults fit its inserts). A story's `revision`
-- is the number of its latest revision (1: as first made; each accepted redo adds one, never
-- reused, so a revision's files are never overwritten). A page's `revision` names the revision
-- its current keys were made in (revision 1 keeps the original keys; later ones are under
-- stories/<id>/pages/<NN>/r<rev>/). While a redo runs, `previous` holds the page's last good
-- text, keys and revision (restored if the redo fails) and `redo_hint` the parent's hint (data
-- for the providers, never instructions). `redo_id` is the story's running redo (NULL: none).
-- The book's current keys: book_pdf_key / book_html_key (NULL: a book made before these
-- columns, at stories/<id>/book.pdf|html).
ALTER TABLE stories ADD COLUMN IF NOT EXISTS revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS redo_id UUID;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS book_pdf_key TEXT;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS book_html_key TEXT;
ALTER TABLE story_pages ADD COLUMN IF NOT EXISTS revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE story_pages ADD COLUMN IF NOT EXISTS redo_hint TEXT;
ALTER TABLE story_pages ADD COLUMN IF NOT EXISTS previous JSONB;
-- One row per redo request (stories.redo_page): what was asked, and what became of it
-- (requested -> running -> completed | failed, or refused with the parent's message).
-- `request_key`: the caller's request_id, or a key derived from the request and the story's
-- revision: a duplicate message finds its row and runs nothing.
CREATE TABLE IF NOT EXISTS page_redos (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    story_id     UUID NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    page_id      UUID REFERENCES story_pages (id) ON DELETE CASCADE,
    page_number  INTEGER,
    from_stage   VARCHAR NOT NULL,
    hint         TEXT,
    request_key  VARCHAR NOT NULL,
    task_id      VARCHAR,
    revision     INTEGER,
    status       VARCHAR NOT NULL DEFAULT 'requested',
    message      TEXT,
    created_at   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_page_redos_story_id_request_key UNIQUE (story_id, request_key),
    CONSTRAINT ck_page_redos_status
        CHECK (status IN ('requested', 'refused', 'running', 'completed', 'failed')),
    CONSTRAINT ck_page_redos_from_stage CHECK (from_stage IN ('text', 'image', 'personalization'))
);
CREATE INDEX IF NOT EXISTS ix_page_redos_story_id ON page_redos (story_id);
DROP TRIGGER IF EXISTS trg_page_redos_updated_at ON page_redos;
CREATE TRIGGER trg_page_redos_updated_at BEFORE UPDATE ON page_redos
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
-- A redo's outcome is an event for the web app (README "Events (webhooks)": redo.completed,
-- redo.failed, redo.refused), recorded by the events section's function in the same statement.
DO $$
DECLARE k text;
BEGIN
    FOREACH k IN ARRAY ARRAY['completed', 'failed', 'refused'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS trg_page_redos_event_%1$s_upd ON page_redos', k);
        EXECUTE format('DROP TRIGGER IF EXISTS trg_page_redos_event_%1$s_ins ON page_redos', k);
        EXECUTE format('CREATE TRIGGER trg_page_redos_event_%1$s_upd AFTER UPDATE ON page_redos FOR EACH ROW '
                       'WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status = %1$L) '
                       'EXECUTE FUNCTION record_outbox_event(%2$L)', k, 'redo.' || k);
        EXECUTE format('CREATE TRIGGER trg_page_redos_event_%1$s_ins AFTER INSERT ON page_redos FOR EACH ROW '
                       'WHEN (NEW.status = %1$L) EXECUTE FUNCTION record_outbox_event(%2$L)', k, 'redo.' || k);
    END LOOP;
END;
$$;
-- ===== end of: Redoing a page =================================================================

-- ===== Personal data: foreign-key actions, files follow rows, retention (issue 15) ==========
-- README "Personal data"; pipeline/privacy/ (drain, retention); db/lifecycle.py.
--
-- Foreign-key actions, chosen so that deleting rows through SQL never removes another family's
-- data and never leaves files without rows:
--   photos.user_id, stories.user_id -> users            CASCADE   a family's own photos and stories go with it
--   stories.protagonist_photo_id -> photos              NO ACTION checked at the end of the statement:
--        deleting a user that cascades to both its photos and its own stories passes; a photo that
--        ANOTHER family's story uses (or a photo deleted on its own while a story uses it) refuses the
--        whole statement with a foreign-key error, and nothing changes. (It was CASCADE: deleting
--        family A's user deleted family B's story, and left B's files on disk.)
--   story_pages, story_outlines, step_errors, provider_jobs, page_redos -> their story/page/photo
--                                                        CASCADE   bookkeeping of the same family's rows
--   orders.user_id, orders.story_id                     RESTRICT  an order is a financial record: a user or
--        story with orders is refused (forget keeps the order's accounting, README "Forgetting a family")
--   order_steps, order_events -> orders                 CASCADE
-- Databases made before this section: the constraint is dropped and re-added only when its action differs.
DO $$
DECLARE
    -- table, column, referenced table, wanted confdeltype (a: no action, c: cascade, r: restrict), its SQL
    spec text[] := ARRAY[
        ['stories', 'protagonist_photo_id', 'photos', 'a', 'NO ACTION']];
    i int;
    con record;
BEGIN
    FOR i IN 1 .. array_length(spec, 1) LOOP
        SELECT c.conname, c.confdeltype INTO con
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         WHERE c.contype = 'f' AND c.conrelid = spec[i][1]::regclass AND c.confrelid = spec[i][3]::regclass
           AND array_length(c.conkey, 1) = 1 AND a.attname = spec[i][2];
        IF con.conname IS NULL THEN
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) ON DELETE %s',
                           spec[i][1], spec[i][1] || '_' || spec[i][2] || '_fkey', spec[i][2], spec[i][3], spec[i][5]);
        ELSIF con.confdeltype::text <> spec[i][4] THEN
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', spec[i][1], con.conname);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) ON DELETE %s',
                           spec[i][1], con.conname, spec[i][2], spec[i][3], spec[i][5]);
        END IF;
    END LOOP;
END;
$$;

-- Files follow rows: stored objects waiting to be deleted. Triggers on the tables whose rows own
-- files queue them in the statement that deletes the rows (whoever deletes: forget, retention, an
-- operator's SQL, a cascade), and the sweeper drains the queue in bounded batches
-- (pipeline/privacy/drain.py): delete the object or every object under the prefix, then the row.
--   storage: 'output' (the deployment's output storage, STORAGE_BACKEND: generated pictures, books,
--            print files) or the photo row's storage_provider ('local', 's3') with its bucket.
--   key:     an object key, or a folder prefix ending in '/' (is_prefix).
--   passes:  deletions done; a row is deleted a second time RECHECK later (STEP_LEASE_SECONDS + 60 s),
--            for a step that was in flight when its row went and wrote a file afterwards.
--   attempts, last_error, not_before: a failed deletion is tried again with backoff.
-- Keys hold ids only (stories/<uuid>/...), and an uploaded photo's key as its row had it.
CREATE TABLE IF NOT EXISTS storage_deletions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    storage     VARCHAR NOT NULL,
    bucket      VARCHAR,
    key         VARCHAR NOT NULL,
    is_prefix   BOOLEAN NOT NULL DEFAULT false,
    reason      VARCHAR NOT NULL,
    passes      INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    queued_at   TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    not_before  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT ck_storage_deletions_prefix CHECK (NOT is_prefix OR key LIKE '%/')
);
CREATE INDEX IF NOT EXISTS ix_storage_deletions_not_before ON storage_deletions (not_before);

CREATE OR REPLACE FUNCTION queue_storage_deletions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'photos' THEN
        INSERT INTO storage_deletions (storage, bucket, key, is_prefix, reason)
        SELECT g.storage_provider, g.bucket, g.object_key, false, 'photos' FROM gone g;
    ELSIF TG_TABLE_NAME = 'stories' THEN
        INSERT INTO storage_deletions (storage, key, is_prefix, reason)
        SELECT 'output', 'stories/' || g.id || '/', true, 'stories' FROM gone g;
    ELSIF TG_TABLE_NAME = 'story_pages' THEN
        -- A page deleted on its own; when its story goes too (a cascade runs after the story's
        -- row is gone, or the story's files were already deleted by retention), the story's
        -- prefix covers it.
        INSERT INTO storage_deletions (storage, key, is_prefix, reason)
        SELECT 'output', 'stories/' || g.story_id || '/pages/'
                         || lpad(g.page_number::text, greatest(2, length(g.page_number::text)), '0') || '/',
               true, 'story_pages'
          FROM gone g
         WHERE EXISTS (SELECT 1 FROM stories s WHERE s.id = g.story_id AND s.files_deleted_at IS NULL);
    ELSIF TG_TABLE_NAME = 'orders' THEN
        INSERT INTO storage_deletions (storage, key, is_prefix, reason)
        SELECT 'output', 'orders/' || g.id || '/', true, 'orders' FROM gone g;
    END IF;
    RETURN NULL;
END;
$$;

-- Retention (RETENTION_BOOK_DAYS): when a story's pictures, books, page texts and print files were
-- deleted. The row stays as a tombstone (status, dates, theme, age; child_name '' and title NULL).
ALTER TABLE stories ADD COLUMN IF NOT EXISTS files_deleted_at TIMESTAMP WITH TIME ZONE;

DO $$
DECLARE t text;
BEGIN
    -- Statement-level with a transition table: one INSERT ... SELECT per statement (or per cascade
    -- step), not one per row.
    FOREACH t IN ARRAY ARRAY['photos', 'stories', 'story_pages', 'orders'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS trg_%1$s_files_follow ON %1$I', t);
        EXECUTE format('CREATE TRIGGER trg_%1$s_files_follow AFTER DELETE ON %1$I REFERENCING OLD TABLE AS gone '
                       'FOR EACH STATEMENT EXECUTE FUNCTION queue_storage_deletions()', t);
    END LOOP;
END;
$$;

-- TRUNCATE fires no DELETE trigger: the same queueing for a TRUNCATE of photos, stories or orders
-- (directly or by CASCADE), before their rows go, so no way of emptying them by SQL leaves files.
CREATE OR REPLACE FUNCTION queue_storage_deletions_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'photos' THEN
        INSERT INTO storage_deletions (storage, bucket, key, is_prefix, reason)
        SELECT storage_provider, bucket, object_key, false, 'photos' FROM photos;
    ELSIF TG_TABLE_NAME = 'stories' THEN
        INSERT INTO storage_deletions (storage, key, is_prefix, reason)
        SELECT 'output', 'stories/' || id || '/', true, 'stories' FROM stories;
    ELSIF TG_TABLE_NAME = 'orders' THEN
        INSERT INTO storage_deletions (storage, key, is_prefix, reason)
        SELECT 'output', 'orders/' || id || '/', true, 'orders' FROM orders;
    END IF;
    RETURN NULL;
END;
$$;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['photos', 'stories', 'orders'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS trg_%1$s_files_follow_truncate ON %1$I', t);
        EXECUTE format('CREATE TRIGGER trg_%1$s_files_follow_truncate BEFORE TRUNCATE ON %1$I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION queue_storage_deletions_truncated()', t);
    END LOOP;
END;
$$;

-- Retention's candidates, oldest first, index-backed (EXPLAIN: tests/test_lifecycle_scale.py):
-- photos not yet deleted, by last change; finished stories whose files are still there, by last change.
CREATE INDEX IF NOT EXISTS ix_photos_retention ON photos (updated_at) WHERE status <> 'deleted';
CREATE INDEX IF NOT EXISTS ix_stories_retention ON stories (updated_at)
    WHERE files_deleted_at IS NULL AND status IN ('completed', 'failed');
-- ===== end of: Personal data ================================================================

-- ===== Personal data: forgetting a family (issue 15; README "Forgetting a family"; db/erasure.py) ==
-- One row per erasure request (`storycreator forget`, the task users.forget), the audit record: who
-- asked ('cli' or 'task'), when, how it ended, and counts per kind. No personal data once finished:
-- `user_id` (needed to resume after a crash) and `targets` (the storage keys and folders still to
-- delete a second time, which name the family's ids) are cleared when it completes.
--   status: running -> rechecking (rows deleted, files deleted once; the second pass is due at
--           recheck_at, STEP_LEASE_SECONDS + 60 s later, for a step that was in flight) -> completed;
--           refused (an order still being paid for, printed or shipped; nothing was deleted).
--   kept_user_id: the anonymous placeholder user (erased-<uuid>@invalid) the kept orders now belong to.
CREATE TABLE IF NOT EXISTS erasures (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID,
    requested_by  VARCHAR NOT NULL,
    status        VARCHAR NOT NULL DEFAULT 'running',
    counts        JSONB NOT NULL DEFAULT '{}'::jsonb,
    targets       JSONB,
    kept_user_id  UUID,
    kept_photo_id UUID,
    kept_story_id UUID,
    message       TEXT,
    recheck_at    TIMESTAMP WITH TIME ZONE,
    requested_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    finished_at   TIMESTAMP WITH TIME ZONE,
    CONSTRAINT ck_erasures_status CHECK (status IN ('running', 'rechecking', 'completed', 'refused')),
    CONSTRAINT ck_erasures_requested_by CHECK (requested_by IN ('cli', 'task')),
    CONSTRAINT ck_erasures_finished_cleared CHECK (status NOT IN ('completed') OR (user_id IS NULL AND targets IS NULL))
);
-- At most one unfinished erasure per user: a second request resumes it.
CREATE UNIQUE INDEX IF NOT EXISTS uq_erasures_open_user ON erasures (user_id) WHERE status IN ('running', 'rechecking');
-- "is this user an erasure's placeholder?" (forget refuses to forget one)
CREATE INDEX IF NOT EXISTS ix_erasures_kept_user_id ON erasures (kept_user_id) WHERE kept_user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_erasures_recheck_at ON erasures (recheck_at) WHERE status = 'rechecking';
-- ===== end of: forgetting a family ============================================================

-- ===== What each book costs (issue 14 §2; README "What each book costs"; db/usage.py) ==========
-- One row per provider call, keyed to its story and/or order (NULL after the family was forgotten:
-- the money stays, the link goes, README "Forgetting a family"), with the units the provider
-- reported and their cost at the configured prices (pipeline/config.py cost_settings) in
-- micro-cents (1e-6 of the currency's smallest unit, so a token's price does not round to 0; an
-- integer like orders.amount). Offline providers are counted too, at cost 0.
--   call_key: one per provider call (an OpenAI response id, a Replicate prediction id, a Lulu
--             print job id, or the step's stage+attempt for a provider without ids), stored as a
--             SHA-256 hex digest so it never names the family's ids: INSERT ... ON CONFLICT DO
--             NOTHING makes a re-run of an at-least-once step count a call once.
CREATE TABLE IF NOT EXISTS provider_usage (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    story_id       UUID REFERENCES stories (id) ON DELETE SET NULL,
    order_id       UUID REFERENCES orders (id) ON DELETE SET NULL,
    page_number    INTEGER,
    stage          VARCHAR NOT NULL,
    provider       VARCHAR NOT NULL,
    operation      VARCHAR NOT NULL DEFAULT '',
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    seconds        NUMERIC(14, 3) NOT NULL DEFAULT 0,
    calls          INTEGER NOT NULL DEFAULT 1,
    cost_microcents BIGINT NOT NULL DEFAULT 0,
    currency       VARCHAR(3) NOT NULL DEFAULT 'usd',
    call_key       VARCHAR NOT NULL,
    created_at     TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT uq_provider_usage_call_key UNIQUE (call_key),
    CONSTRAINT ck_provider_usage_units CHECK (input_tokens >= 0 AND output_tokens >= 0 AND seconds >= 0
                                              AND calls >= 0 AND cost_microcents >= 0)
);
CREATE INDEX IF NOT EXISTS ix_provider_usage_story_id ON provider_usage (story_id) WHERE story_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_provider_usage_order_id ON provider_usage (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_provider_usage_created_at ON provider_usage (created_at);

-- A hold: a paid call's estimated cost, taken under the story's budget lock before the call and
-- removed when the call's actual cost is recorded (or it failed). A hold whose run died is
-- ignored after expires_at. hold_key names the call site (SHA-256 hex, like call_key).
CREATE TABLE IF NOT EXISTS budget_holds (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    story_id        UUID NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    hold_key        VARCHAR NOT NULL,
    provider        VARCHAR NOT NULL,
    cost_microcents BIGINT NOT NULL,
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    expires_at      TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT uq_budget_holds_story_id_hold_key UNIQUE (story_id, hold_key),
    CONSTRAINT ck_budget_holds_cost CHECK (cost_microcents >= 0)
);

-- A story's budget in cents: NULL = the default (STORY_BUDGET_CENTS); budget_unlimited = no limit
-- (`storycreator budget --story ID --cents N | --unlimited | --default`).
ALTER TABLE stories ADD COLUMN IF NOT EXISTS budget_cents BIGINT;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS budget_unlimited BOOLEAN NOT NULL DEFAULT false;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ck_stories_budget_cents') THEN
        ALTER TABLE stories ADD CONSTRAINT ck_stories_budget_cents CHECK (budget_cents >= 0);
    END IF;
END;
$$;
-- ===== end of: what each book costs ===========================================================
