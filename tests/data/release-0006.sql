-- pg_dump --inserts of a schema made by jobrunner at commit 86ef4c1 (migrations 0001-0006)
-- by running that release's own code; loaded by tests/test_upgrade.py. psql meta-commands removed.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: jr_release_fixture; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA jr_release_fixture;


--
-- Name: job_status; Type: TYPE; Schema: jr_release_fixture; Owner: -
--

CREATE TYPE jr_release_fixture.job_status AS ENUM (
    'pending',
    'processing',
    'completed',
    'failed',
    'active',
    'queued',
    'cancelled',
    'retrying'
);


--
-- Name: keep_removed_schedule_cancelled(); Type: FUNCTION; Schema: jr_release_fixture; Owner: -
--

CREATE FUNCTION jr_release_fixture.keep_removed_schedule_cancelled() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RETURN NULL;
END
$$;


--
-- Name: schedule_run_status(); Type: FUNCTION; Schema: jr_release_fixture; Owner: -
--

CREATE FUNCTION jr_release_fixture.schedule_run_status() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'jr_release_fixture', 'public'
    AS $$
BEGIN
    UPDATE jobs
    SET metadata = coalesce(metadata, '{}'::jsonb)
                   || jsonb_build_object('last_run_status', NEW.status::text)
    WHERE tenant = NEW.tenant AND job_id = NEW.schedule_id AND status = 'active'
      AND metadata ->> 'last_job_id' = NEW.job_id::text;
    RETURN NULL;
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: flow_rate_events; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.flow_rate_events (
    rule_id bigint NOT NULL,
    at timestamp with time zone NOT NULL
);


--
-- Name: flow_rules; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.flow_rules (
    rule_id bigint NOT NULL,
    tenant uuid,
    name text,
    max_running integer,
    rate_count integer,
    rate_period interval,
    paused boolean DEFAULT false NOT NULL,
    weight double precision,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    scope text GENERATED ALWAYS AS (((COALESCE((tenant)::text, '*'::text) || '/'::text) || COALESCE(name, '*'::text))) STORED,
    CONSTRAINT flow_rules_check CHECK (((tenant IS NOT NULL) OR (name IS NOT NULL))),
    CONSTRAINT flow_rules_check1 CHECK (((rate_count IS NULL) = (rate_period IS NULL))),
    CONSTRAINT flow_rules_check2 CHECK (((weight IS NULL) OR (name IS NULL))),
    CONSTRAINT flow_rules_max_running_check CHECK ((max_running >= 0)),
    CONSTRAINT flow_rules_rate_count_check CHECK ((rate_count >= 0)),
    CONSTRAINT flow_rules_rate_period_check CHECK ((rate_period > '00:00:00'::interval)),
    CONSTRAINT flow_rules_weight_check CHECK ((weight > (0)::double precision))
);


--
-- Name: flow_rules_rule_id_seq; Type: SEQUENCE; Schema: jr_release_fixture; Owner: -
--

CREATE SEQUENCE jr_release_fixture.flow_rules_rule_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: flow_rules_rule_id_seq; Type: SEQUENCE OWNED BY; Schema: jr_release_fixture; Owner: -
--

ALTER SEQUENCE jr_release_fixture.flow_rules_rule_id_seq OWNED BY jr_release_fixture.flow_rules.rule_id;


--
-- Name: flow_state; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.flow_state (
    id boolean DEFAULT true NOT NULL,
    enabled boolean DEFAULT false NOT NULL,
    fair boolean DEFAULT false NOT NULL,
    version bigint DEFAULT 0 NOT NULL,
    vclock double precision DEFAULT 0 NOT NULL,
    CONSTRAINT flow_state_id_check CHECK (id)
);


--
-- Name: flow_tenant_pass; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.flow_tenant_pass (
    tenant uuid NOT NULL,
    pass double precision DEFAULT 0 NOT NULL
);


--
-- Name: job_details; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.job_details (
    tenant uuid NOT NULL,
    detail_id uuid DEFAULT gen_random_uuid() NOT NULL,
    job_id uuid NOT NULL,
    step_name character varying NOT NULL,
    status jr_release_fixture.job_status NOT NULL,
    result jsonb,
    processed_at timestamp without time zone,
    retry_count integer DEFAULT 0,
    metadata jsonb
);


--
-- Name: jobs; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.jobs (
    tenant uuid NOT NULL,
    job_id uuid DEFAULT gen_random_uuid() NOT NULL,
    type character varying NOT NULL,
    metadata jsonb,
    status jr_release_fixture.job_status NOT NULL,
    created_at timestamp without time zone DEFAULT timezone('utc'::text, now()),
    updated_at timestamp without time zone,
    user_id uuid NOT NULL,
    runner_type character varying DEFAULT 'postgres'::character varying NOT NULL,
    external_id character varying,
    external_run_id character varying,
    queue text DEFAULT 'default'::text NOT NULL,
    priority smallint DEFAULT 0 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    data jsonb DEFAULT '{}'::jsonb NOT NULL,
    result jsonb,
    error jsonb,
    progress smallint DEFAULT 0 NOT NULL,
    progress_message text,
    attempts integer DEFAULT 0 NOT NULL,
    lease_token bigint DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    lease_expires_at timestamp with time zone,
    worker_id uuid,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    singleton_key text,
    schedule_id uuid,
    scheduled_for timestamp with time zone
)
WITH (fillfactor='80', autovacuum_vacuum_scale_factor='0.02', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_delay='1');


--
-- Name: schedules; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.schedules (
    tenant uuid NOT NULL,
    schedule_id uuid NOT NULL,
    singleton_key text NOT NULL,
    name text NOT NULL,
    data jsonb DEFAULT '{}'::jsonb NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    expression text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    kind text NOT NULL,
    missed_ticks text DEFAULT 'latest'::text NOT NULL,
    overlap text DEFAULT 'allow'::text NOT NULL,
    max_catch_up integer DEFAULT 10 NOT NULL,
    priority smallint DEFAULT 0 NOT NULL,
    queue text DEFAULT 'default'::text NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    user_id uuid NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    next_run_at timestamp with time zone NOT NULL,
    last_run_at timestamp with time zone,
    last_job_id uuid,
    skipped_ticks bigint DEFAULT 0 NOT NULL,
    runner_type text DEFAULT 'postgres'::text NOT NULL,
    version integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schedules_kind_check CHECK ((kind = ANY (ARRAY['cron'::text, 'interval'::text]))),
    CONSTRAINT schedules_max_catch_up_check CHECK (((max_catch_up >= 1) AND (max_catch_up <= 1000))),
    CONSTRAINT schedules_missed_ticks_check CHECK ((missed_ticks = ANY (ARRAY['latest'::text, 'skip'::text, 'all'::text]))),
    CONSTRAINT schedules_overlap_check CHECK ((overlap = ANY (ARRAY['allow'::text, 'skip'::text])))
);


--
-- Name: schema_migrations; Type: TABLE; Schema: jr_release_fixture; Owner: -
--

CREATE TABLE jr_release_fixture.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: flow_rules rule_id; Type: DEFAULT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.flow_rules ALTER COLUMN rule_id SET DEFAULT nextval('jr_release_fixture.flow_rules_rule_id_seq'::regclass);


--
-- Data for Name: flow_rate_events; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--



--
-- Data for Name: flow_rules; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--



--
-- Data for Name: flow_state; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--

INSERT INTO jr_release_fixture.flow_state VALUES (true, false, false, 0, 0);


--
-- Data for Name: flow_tenant_pass; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--



--
-- Data for Name: job_details; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--

INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', '62252cd5-f2cd-4466-8a5d-ef7f5cd91a24', 'ca076d5b-cfac-4b91-9e38-82012827da93', 'attempt', 'failed', '{"type": "ValueError", "message": "boom", "traceback": "Traceback (most recent call last):\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 420, in _execute\n    result = await self._invoke(spec, ctx, data)\n             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 457, in _invoke\n    return await spec.handler(ctx, data)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/make_release_fixture.py\", line 25, in boom\n    raise ValueError(\"boom\")\nValueError: boom\n"}', '2026-12-04 17:07:53.785174', 1, '{"worker_id": "9ba75907-bca7-422c-88fc-fc7b175b9ad7", "started_at": "2026-12-04T17:07:53.780638+00:00", "duration_ms": 0.8017850000214821, "next_run_at": null}');
INSERT INTO jr_release_fixture.job_details VALUES ('22222222-2222-2222-2222-222222222222', 'fa09eb3c-a739-4801-97a4-8c03e1c9c45d', 'a7fa3540-de62-43b5-a9e6-848739a12913', 'attempt', 'failed', '{"type": "ValueError", "message": "boom", "traceback": "Traceback (most recent call last):\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 420, in _execute\n    result = await self._invoke(spec, ctx, data)\n             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 457, in _invoke\n    return await spec.handler(ctx, data)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/make_release_fixture.py\", line 25, in boom\n    raise ValueError(\"boom\")\nValueError: boom\n"}', '2026-12-04 17:07:53.785174', 1, '{"worker_id": "9ba75907-bca7-422c-88fc-fc7b175b9ad7", "started_at": "2026-12-04T17:07:53.781469+00:00", "duration_ms": 0.2863159998014453, "next_run_at": "2026-12-04T18:04:29.391421+00:00"}');
INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', 'c4fbd4e0-19ce-411f-9799-82e794ff2bac', '1f6be57f-4559-476d-8ac7-379c356287ad', 'render', 'completed', NULL, '2026-12-04 17:07:53.796531', 1, '{"started_at": "2026-12-04T17:07:53.782711+00:00", "duration_ms": 14, "finished_at": "2026-12-04T17:07:53.796531+00:00"}');
INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', 'f3b4fe82-a4dd-458f-bb42-46e6415fc2a0', '5c23c2ae-bafb-49d5-89e2-54f2521a631e', 'render', 'completed', NULL, '2026-12-04 17:07:53.799102', 1, '{"started_at": "2026-12-04T17:07:53.784865+00:00", "duration_ms": 14, "finished_at": "2026-12-04T17:07:53.799102+00:00"}');
INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', 'a0a99326-9bed-45f0-9699-65a2b0ae479e', 'd3e3a69b-fff7-48e8-ba07-07c41f91085d', 'render', 'completed', NULL, '2026-12-04 17:07:53.79977', 1, '{"started_at": "2026-12-04T17:07:53.790553+00:00", "duration_ms": 9, "finished_at": "2026-12-04T17:07:53.79977+00:00"}');
INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', '2d1f7a14-0876-4d08-a8d3-75e156665fa5', '5c23c2ae-bafb-49d5-89e2-54f2521a631e', 'attempt', 'completed', NULL, '2026-12-04 17:07:53.80654', 1, '{"worker_id": "9ba75907-bca7-422c-88fc-fc7b175b9ad7", "started_at": "2026-12-04T17:07:53.780253+00:00", "duration_ms": 23.23626899988085}');
INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', 'c57d2e86-91d0-461d-9895-4ee594b40215', '1f6be57f-4559-476d-8ac7-379c356287ad', 'attempt', 'completed', NULL, '2026-12-04 17:07:53.80654', 1, '{"worker_id": "9ba75907-bca7-422c-88fc-fc7b175b9ad7", "started_at": "2026-12-04T17:07:53.78042+00:00", "duration_ms": 22.72975400001087}');
INSERT INTO jr_release_fixture.job_details VALUES ('11111111-1111-1111-1111-111111111111', '729060ab-a681-4fa6-a349-e53a50b4aff3', 'd3e3a69b-fff7-48e8-ba07-07c41f91085d', 'attempt', 'completed', NULL, '2026-12-04 17:07:53.80654', 1, '{"worker_id": "9ba75907-bca7-422c-88fc-fc7b175b9ad7", "started_at": "2026-12-04T17:07:53.780545+00:00", "duration_ms": 25.46280799970191}');


--
-- Data for Name: jobs; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--

INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', 'ca076d5b-cfac-4b91-9e38-82012827da93', 'fx-fail', '{}', 'failed', '2026-12-04 17:07:53.752059', '2026-12-04 17:07:53.785174', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.752059+00', '{}', NULL, '{"type": "ValueError", "message": "boom", "traceback": "Traceback (most recent call last):\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 420, in _execute\n    result = await self._invoke(spec, ctx, data)\n             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 457, in _invoke\n    return await spec.handler(ctx, data)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/make_release_fixture.py\", line 25, in boom\n    raise ValueError(\"boom\")\nValueError: boom\n"}', 0, NULL, 1, 1, 1, NULL, NULL, '2026-12-04 17:07:53.774774+00', '2026-12-04 17:07:53.785174+00', NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('22222222-2222-2222-2222-222222222222', 'a7fa3540-de62-43b5-a9e6-848739a12913', 'fx-retry', '{}', 'retrying', '2026-12-04 17:07:53.75275', '2026-12-04 17:07:53.785174', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 18:04:29.391421+00', '{}', NULL, '{"type": "ValueError", "message": "boom", "traceback": "Traceback (most recent call last):\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 420, in _execute\n    result = await self._invoke(spec, ctx, data)\n             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/oldrel/src/jobrunner/backends/postgres/_worker.py\", line 457, in _invoke\n    return await spec.handler(ctx, data)\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"/tmp/make_release_fixture.py\", line 25, in boom\n    raise ValueError(\"boom\")\nValueError: boom\n"}', 0, NULL, 1, 1, 5, NULL, NULL, '2026-12-04 17:07:53.774774+00', NULL, NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', '5c23c2ae-bafb-49d5-89e2-54f2521a631e', 'fx-ok', '{}', 'completed', '2026-12-04 17:07:53.744642', '2026-12-04 17:07:53.80654', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.744642+00', '{"n": 0}', '{"ok": 0}', NULL, 100, NULL, 1, 1, 3, NULL, NULL, '2026-12-04 17:07:53.774774+00', '2026-12-04 17:07:53.80654+00', NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', '1f6be57f-4559-476d-8ac7-379c356287ad', 'fx-ok', '{}', 'completed', '2026-12-04 17:07:53.750286', '2026-12-04 17:07:53.80654', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.750286+00', '{"n": 1}', '{"ok": 1}', NULL, 100, NULL, 1, 1, 3, NULL, NULL, '2026-12-04 17:07:53.774774+00', '2026-12-04 17:07:53.80654+00', NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', 'd3e3a69b-fff7-48e8-ba07-07c41f91085d', 'fx-ok', '{}', 'completed', '2026-12-04 17:07:53.751324', '2026-12-04 17:07:53.80654', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.751324+00', '{"n": 2}', '{"ok": 2}', NULL, 100, NULL, 1, 1, 3, NULL, NULL, '2026-12-04 17:07:53.774774+00', '2026-12-04 17:07:53.80654+00', NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('22222222-2222-2222-2222-222222222222', '44dad1d6-4aac-4343-95c3-84f3f7409f80', 'fx-ok', '{"cancel_reason": "fixture"}', 'cancelled', '2026-12-04 17:07:53.82342', '2026-12-04 17:07:53.825303', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.82342+00', '{"n": 9}', NULL, '{"type": "cancelled", "message": "fixture", "traceback": null}', 0, NULL, 0, 0, 3, NULL, NULL, NULL, '2026-12-04 17:07:53.825303+00', NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', '95d5d066-fcf0-41ed-a5db-9efa20445d0b', 'fx-ok', '{}', 'queued', '2026-12-04 17:07:53.830029', '2026-12-04 17:07:53.830029', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.830029+00', '{"n": 10}', NULL, NULL, 0, NULL, 0, 0, 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('22222222-2222-2222-2222-222222222222', '9f4478e4-e3c2-4fe5-8a2a-ac2f5c44c46a', 'fx-ok', '{}', 'pending', '2026-12-04 17:07:53.831988', '2026-12-04 17:07:53.831988', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2036-12-01 17:07:53.83168+00', '{"n": 11}', NULL, NULL, 0, NULL, 0, 0, 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', '8f299409-5642-4f77-a399-f05470ec9173', 'fx-ok', '{}', 'queued', '2026-12-04 17:07:53.833011', '2026-12-04 17:07:53.833011', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 5, '2026-12-04 17:07:53.833011+00', '{"n": 12}', NULL, NULL, 0, NULL, 0, 0, 3, NULL, NULL, NULL, NULL, 'one', NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', '85a5ba23-918e-4fb7-9f1f-d9833f17610b', 'fx-block', '{}', 'processing', '2026-12-04 17:07:53.83402', '2026-12-04 17:07:53.83402', '00000000-0000-0000-0000-000000000000', 'postgres', NULL, NULL, 'default', 0, '2026-12-04 17:07:53.83402+00', '{}', NULL, NULL, 0, NULL, 1, 1, 3, '2026-12-04 16:07:53.835281+00', '250e8809-95a8-4d3d-8bc3-d0880a7b27ac', '2026-12-04 17:07:53.835281+00', NULL, NULL, NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('11111111-1111-1111-1111-111111111111', '59d8c373-5187-48b7-b713-115b195120da', 'fx-ok', '{"kind": "cron", "paused": false, "overlap": "allow", "timezone": "UTC", "recurring": true, "expression": "*/5 * * * *", "last_job_id": null, "last_run_at": null, "next_run_at": "2026-12-04T17:10:00+00:00", "schedule_id": "59d8c373-5187-48b7-b713-115b195120da", "max_catch_up": 10, "missed_ticks": "latest", "singleton_key": "every-5", "skipped_ticks": 0, "last_run_status": null}', 'active', '2026-12-04 17:07:53.838097', '2026-12-04 17:07:53.838097', '00000000-0000-0000-0000-000000000000', 'postgres', '59d8c373-5187-48b7-b713-115b195120da', NULL, 'default', 0, '2026-12-04 17:10:00+00', '{"n": 20}', NULL, NULL, 0, NULL, 0, 0, 3, NULL, NULL, NULL, NULL, 'every-5', NULL, NULL);
INSERT INTO jr_release_fixture.jobs VALUES ('22222222-2222-2222-2222-222222222222', 'f30920d5-0b08-421f-9a39-ca7b3bf50aa8', 'fx-ok', '{"kind": "cron", "paused": true, "overlap": "allow", "timezone": "UTC", "recurring": true, "expression": "0 3 * * *", "last_job_id": null, "last_run_at": null, "next_run_at": null, "schedule_id": "f30920d5-0b08-421f-9a39-ca7b3bf50aa8", "max_catch_up": 10, "missed_ticks": "latest", "singleton_key": "nightly", "skipped_ticks": 0, "last_run_status": null}', 'active', '2026-12-04 17:07:53.843936', '2026-12-04 17:07:53.848488', '00000000-0000-0000-0000-000000000000', 'postgres', 'f30920d5-0b08-421f-9a39-ca7b3bf50aa8', NULL, 'default', 0, '2026-12-05 03:00:00+00', '{"n": 21}', NULL, NULL, 0, NULL, 0, 0, 3, NULL, NULL, NULL, NULL, 'nightly', NULL, NULL);


--
-- Data for Name: schedules; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--

INSERT INTO jr_release_fixture.schedules VALUES ('11111111-1111-1111-1111-111111111111', '59d8c373-5187-48b7-b713-115b195120da', 'every-5', 'fx-ok', '{"n": 20}', '{}', '*/5 * * * *', 'UTC', 'cron', 'latest', 'allow', 10, 0, 'default', 3, '00000000-0000-0000-0000-000000000000', false, '2026-12-04 17:10:00+00', NULL, NULL, 0, 'postgres', 1, '2026-12-04 17:07:53.838097+00', '2026-12-04 17:07:53.838097+00');
INSERT INTO jr_release_fixture.schedules VALUES ('22222222-2222-2222-2222-222222222222', 'f30920d5-0b08-421f-9a39-ca7b3bf50aa8', 'nightly', 'fx-ok', '{"n": 21}', '{}', '0 3 * * *', 'UTC', 'cron', 'latest', 'allow', 10, 0, 'default', 3, '00000000-0000-0000-0000-000000000000', true, '2026-12-05 03:00:00+00', NULL, NULL, 0, 'postgres', 2, '2026-12-04 17:07:53.843936+00', '2026-12-04 17:07:53.848488+00');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: jr_release_fixture; Owner: -
--

INSERT INTO jr_release_fixture.schema_migrations VALUES (1, 'core', '2026-12-04 17:07:53.662502+00');
INSERT INTO jr_release_fixture.schema_migrations VALUES (2, 'schedules', '2026-12-04 17:07:53.689763+00');
INSERT INTO jr_release_fixture.schema_migrations VALUES (3, 'monitoring', '2026-12-04 17:07:53.706617+00');
INSERT INTO jr_release_fixture.schema_migrations VALUES (4, 'fairness', '2026-12-04 17:07:53.718337+00');
INSERT INTO jr_release_fixture.schema_migrations VALUES (6, 'temporal', '2026-12-04 17:07:53.730159+00');


--
-- Name: flow_rules_rule_id_seq; Type: SEQUENCE SET; Schema: jr_release_fixture; Owner: -
--

SELECT pg_catalog.setval('jr_release_fixture.flow_rules_rule_id_seq', 1, false);


--
-- Name: flow_rules flow_rules_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.flow_rules
    ADD CONSTRAINT flow_rules_pkey PRIMARY KEY (rule_id);


--
-- Name: flow_rules flow_rules_scope_key; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.flow_rules
    ADD CONSTRAINT flow_rules_scope_key UNIQUE (scope);


--
-- Name: flow_state flow_state_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.flow_state
    ADD CONSTRAINT flow_state_pkey PRIMARY KEY (id);


--
-- Name: flow_tenant_pass flow_tenant_pass_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.flow_tenant_pass
    ADD CONSTRAINT flow_tenant_pass_pkey PRIMARY KEY (tenant);


--
-- Name: job_details job_details_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.job_details
    ADD CONSTRAINT job_details_pkey PRIMARY KEY (tenant, detail_id);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (tenant, job_id);


--
-- Name: schedules schedules_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (tenant, schedule_id);


--
-- Name: schedules schedules_tenant_singleton_key_key; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.schedules
    ADD CONSTRAINT schedules_tenant_singleton_key_key UNIQUE (tenant, singleton_key);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: flow_rate_events_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX flow_rate_events_idx ON jr_release_fixture.flow_rate_events USING btree (rule_id, at);


--
-- Name: job_details_job_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX job_details_job_idx ON jr_release_fixture.job_details USING btree (tenant, job_id, processed_at);


--
-- Name: jobs_claim_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_claim_idx ON jr_release_fixture.jobs USING btree (queue, priority DESC, run_at, job_id) WHERE ((status = ANY (ARRAY['pending'::jr_release_fixture.job_status, 'queued'::jr_release_fixture.job_status, 'retrying'::jr_release_fixture.job_status])) AND ((runner_type)::text = 'postgres'::text));


--
-- Name: jobs_created_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_created_idx ON jr_release_fixture.jobs USING btree (created_at DESC NULLS LAST, job_id DESC);


--
-- Name: jobs_due_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_due_idx ON jr_release_fixture.jobs USING btree (run_at) WHERE ((status = ANY (ARRAY['pending'::jr_release_fixture.job_status, 'queued'::jr_release_fixture.job_status, 'retrying'::jr_release_fixture.job_status])) AND ((runner_type)::text = 'postgres'::text));


--
-- Name: jobs_external_id_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_external_id_idx ON jr_release_fixture.jobs USING btree (external_id) WHERE (external_id IS NOT NULL);


--
-- Name: jobs_finished_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_finished_idx ON jr_release_fixture.jobs USING btree (completed_at, tenant) INCLUDE (status) WHERE (status = ANY (ARRAY['completed'::jr_release_fixture.job_status, 'failed'::jr_release_fixture.job_status, 'cancelled'::jr_release_fixture.job_status]));


--
-- Name: jobs_lease_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_lease_idx ON jr_release_fixture.jobs USING btree (lease_expires_at) WHERE (status = 'processing'::jr_release_fixture.job_status);


--
-- Name: jobs_schedule_live_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_schedule_live_idx ON jr_release_fixture.jobs USING btree (tenant, schedule_id) WHERE ((schedule_id IS NOT NULL) AND (status = ANY (ARRAY['pending'::jr_release_fixture.job_status, 'queued'::jr_release_fixture.job_status, 'processing'::jr_release_fixture.job_status, 'retrying'::jr_release_fixture.job_status])));


--
-- Name: jobs_schedule_tick_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE UNIQUE INDEX jobs_schedule_tick_idx ON jr_release_fixture.jobs USING btree (tenant, schedule_id, scheduled_for) WHERE ((schedule_id IS NOT NULL) AND (scheduled_for IS NOT NULL));


--
-- Name: jobs_singleton_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE UNIQUE INDEX jobs_singleton_idx ON jr_release_fixture.jobs USING btree (tenant, singleton_key) WHERE ((singleton_key IS NOT NULL) AND (status = ANY (ARRAY['pending'::jr_release_fixture.job_status, 'queued'::jr_release_fixture.job_status, 'processing'::jr_release_fixture.job_status, 'retrying'::jr_release_fixture.job_status])));


--
-- Name: jobs_temporal_schedule_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE UNIQUE INDEX jobs_temporal_schedule_idx ON jr_release_fixture.jobs USING btree (external_id) WHERE (((runner_type)::text = 'temporal'::text) AND (status = 'active'::jr_release_fixture.job_status));


--
-- Name: jobs_temporal_schedule_runs_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_temporal_schedule_runs_idx ON jr_release_fixture.jobs USING btree (tenant, schedule_id, created_at DESC) WHERE ((schedule_id IS NOT NULL) AND ((runner_type)::text = 'temporal'::text));


--
-- Name: jobs_tenant_created_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_tenant_created_idx ON jr_release_fixture.jobs USING btree (tenant, created_at DESC NULLS LAST, job_id DESC);


--
-- Name: jobs_tenant_status_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_tenant_status_idx ON jr_release_fixture.jobs USING btree (tenant, status, runner_type);


--
-- Name: jobs_waiting_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX jobs_waiting_idx ON jr_release_fixture.jobs USING btree (tenant, run_at) WHERE (status = ANY (ARRAY['pending'::jr_release_fixture.job_status, 'queued'::jr_release_fixture.job_status, 'retrying'::jr_release_fixture.job_status]));


--
-- Name: schedules_due_idx; Type: INDEX; Schema: jr_release_fixture; Owner: -
--

CREATE INDEX schedules_due_idx ON jr_release_fixture.schedules USING btree (next_run_at) WHERE ((NOT paused) AND (runner_type = 'postgres'::text));


--
-- Name: jobs jobs_removed_schedule_stays_cancelled; Type: TRIGGER; Schema: jr_release_fixture; Owner: -
--

CREATE TRIGGER jobs_removed_schedule_stays_cancelled BEFORE UPDATE OF status ON jr_release_fixture.jobs FOR EACH ROW WHEN (((old.status = 'cancelled'::jr_release_fixture.job_status) AND (new.status IS DISTINCT FROM old.status) AND (old.metadata ? 'schedule_removed'::text))) EXECUTE FUNCTION jr_release_fixture.keep_removed_schedule_cancelled();


--
-- Name: jobs jobs_schedule_run_status; Type: TRIGGER; Schema: jr_release_fixture; Owner: -
--

CREATE TRIGGER jobs_schedule_run_status AFTER UPDATE OF status ON jr_release_fixture.jobs FOR EACH ROW WHEN (((new.schedule_id IS NOT NULL) AND (new.status IS DISTINCT FROM old.status))) EXECUTE FUNCTION jr_release_fixture.schedule_run_status();


--
-- Name: flow_rate_events flow_rate_events_rule_id_fkey; Type: FK CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.flow_rate_events
    ADD CONSTRAINT flow_rate_events_rule_id_fkey FOREIGN KEY (rule_id) REFERENCES jr_release_fixture.flow_rules(rule_id) ON DELETE CASCADE;


--
-- Name: job_details job_details_tenant_job_id_fkey; Type: FK CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.job_details
    ADD CONSTRAINT job_details_tenant_job_id_fkey FOREIGN KEY (tenant, job_id) REFERENCES jr_release_fixture.jobs(tenant, job_id) ON DELETE CASCADE;


--
-- Name: schedules schedules_tenant_schedule_id_fkey; Type: FK CONSTRAINT; Schema: jr_release_fixture; Owner: -
--

ALTER TABLE ONLY jr_release_fixture.schedules
    ADD CONSTRAINT schedules_tenant_schedule_id_fkey FOREIGN KEY (tenant, schedule_id) REFERENCES jr_release_fixture.jobs(tenant, job_id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


