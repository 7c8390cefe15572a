-- jobrunner 0004: multi-tenant fairness and flow control for the PostgreSQL backend.
-- Runs with search_path set to the jobrunner schema.
--
-- Design: running counts are never stored; they are counted from `processing` rows, so every
-- path that ends an attempt (complete, fail, rescue, release, cancel, delete) frees capacity
-- without bookkeeping. Claims that must honour limits run `claim_jobs_fair` under one
-- transaction-level advisory lock per schema, so no two of them can count the same free slot.

-- One row per scope: a tenant, a job name, or a (tenant, job name) pair. NULL = any.
CREATE TABLE flow_rules (
    rule_id     BIGSERIAL PRIMARY KEY,
    tenant      UUID,
    name        TEXT,
    max_running INTEGER CHECK (max_running >= 0),
    rate_count  INTEGER CHECK (rate_count >= 0),
    rate_period INTERVAL CHECK (rate_period > interval '0'),
    paused      BOOLEAN NOT NULL DEFAULT false,
    weight      FLOAT8 CHECK (weight > 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    scope       TEXT GENERATED ALWAYS AS
                    (coalesce(tenant::text, '*') || '/' || coalesce(name, '*')) STORED UNIQUE,
    CHECK (tenant IS NOT NULL OR name IS NOT NULL),
    CHECK ((rate_count IS NULL) = (rate_period IS NULL)),
    CHECK (weight IS NULL OR name IS NULL)
);

-- Claim instants of rate-limited scopes (a sliding window: exact, unlike a token bucket).
CREATE TABLE flow_rate_events (
    rule_id BIGINT NOT NULL REFERENCES flow_rules (rule_id) ON DELETE CASCADE,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX flow_rate_events_idx ON flow_rate_events (rule_id, at);

-- Stride scheduling state: a tenant's virtual pass advances by 1/weight per claimed job.
CREATE TABLE flow_tenant_pass (
    tenant UUID PRIMARY KEY,
    pass   FLOAT8 NOT NULL DEFAULT 0
);

-- Singleton: whether flow control is on (the plain claim yields to the fair one when it is),
-- the fair-claiming switch, a version bumped by every change, and the virtual clock.
CREATE TABLE flow_state (
    id       BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    enabled  BOOLEAN NOT NULL DEFAULT false,
    fair     BOOLEAN NOT NULL DEFAULT false,
    version  BIGINT NOT NULL DEFAULT 0,
    vclock   FLOAT8 NOT NULL DEFAULT 0
);
INSERT INTO flow_state (id) VALUES (true);

-- The fair claim walks tenants with a skip scan of an index on
-- (queue, tenant, priority DESC, run_at, job_id) over live rows. It is NOT created here: it
-- costs every insert 10-20 %, so FlowControl builds it (CREATE INDEX CONCURRENTLY, query
-- fair_index_create) the first time flow control is switched on, and the common case without
-- flow control never pays for it.

-- Running counts come from the existing jobs_lease_idx (status = 'processing'): no extra
-- index on the claim path, so the common case pays nothing for them.
