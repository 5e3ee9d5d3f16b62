-- Retention: how long each camera's footage is kept, evidence holds that stop its deletion, and the sweep's state.
--
-- Policies. A camera's retention is the first of: its own policy, its retention group's, its site's, the default
-- (31 days), each clamped to the bounds in retention_settings (which triggers also enforce on every write, so no
-- writer can store a policy outside them). `argus_retention_policy(camera)` answers it; the sweep, the dry run and
-- the api all ask that one function, so they cannot disagree.
--
-- Holds. An evidence hold names cameras and a time range; while it is not released, no segment of those cameras
-- overlapping the range is deleted (a segment that straddles an edge is kept whole). Holds are never deleted, only
-- released (a trigger refuses DELETE), so the record of what was held, by whom and why stays.
--
-- Sweep state. The sweep is safe to stop anywhere: a batch deletes its objects, then its rows, in one transaction
-- that also holds a SHARE lock on the hold tables (a hold being created waits for the batch, and a batch never
-- deletes what a committed hold covers). A wholly expired day is detached from `segments` first (so nothing reads
-- its rows), its objects deleted in batches with a cursor kept in retention_day_sweeps, then the table dropped. Init
-- segments whose last segment went are queued in retention_init_candidates in the same transaction as the row
-- deletes, and deleted once no segment refers to them. Progress per sweep and per camera is committed with each
-- batch, so an interrupted sweep is still audited with what it did.

CREATE TABLE retention_settings (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    min_days integer NOT NULL CHECK (min_days >= 1),
    max_days integer NOT NULL CHECK (max_days <= 3650),
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (max_days >= min_days)
);

INSERT INTO retention_settings (min_days, max_days, updated_by) VALUES (7, 90, 'migration');

CREATE TABLE retention_groups (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A camera belongs to at most one retention group, so its policy is never ambiguous.
CREATE TABLE retention_group_members (
    camera text PRIMARY KEY CHECK (camera ~ '^[A-Za-z0-9_-]{1,64}$'),
    group_id text NOT NULL REFERENCES retention_groups (id) ON DELETE CASCADE
);

CREATE INDEX retention_group_members_group_idx ON retention_group_members (group_id);

CREATE TABLE retention_policies (
    scope text NOT NULL CHECK (scope IN ('default', 'site', 'group', 'camera')),
    subject text NOT NULL CHECK (subject ~ '^[A-Za-z0-9_-]{1,64}$' OR subject = '*'),
    days integer NOT NULL CHECK (days >= 1),
    reason text NOT NULL DEFAULT '',
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject),
    CHECK ((scope = 'default') = (subject = '*'))
);

INSERT INTO retention_policies (scope, subject, days, reason, updated_by)
VALUES ('default', '*', 31, 'the council default', 'migration');

CREATE FUNCTION argus_retention_policy_bounds() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    lo integer;
    hi integer;
BEGIN
    SELECT min_days, max_days INTO lo, hi FROM retention_settings;
    IF NEW.days < lo OR NEW.days > hi THEN
        RAISE EXCEPTION 'retention of % days is outside the allowed % to % days', NEW.days, lo, hi
            USING ERRCODE = 'check_violation', CONSTRAINT = 'retention_policy_bounds';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER retention_policies_bounds BEFORE INSERT OR UPDATE ON retention_policies
    FOR EACH ROW EXECUTE FUNCTION argus_retention_policy_bounds();

CREATE FUNCTION argus_retention_keep_default() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.scope = 'default' THEN
        RAISE EXCEPTION 'the default retention policy cannot be removed, only changed'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER retention_policies_keep_default BEFORE DELETE ON retention_policies
    FOR EACH ROW EXECUTE FUNCTION argus_retention_keep_default();

CREATE FUNCTION argus_retention_settings_fit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    outside text;
BEGIN
    SELECT string_agg(format('%s %s (%s days)', scope, subject, days), ', ' ORDER BY scope, subject) INTO outside
    FROM retention_policies WHERE days < NEW.min_days OR days > NEW.max_days;
    IF outside IS NOT NULL THEN
        RAISE EXCEPTION 'policies outside % to % days: %', NEW.min_days, NEW.max_days, outside
            USING ERRCODE = 'check_violation', CONSTRAINT = 'retention_settings_fit';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER retention_settings_fit BEFORE UPDATE ON retention_settings
    FOR EACH ROW EXECUTE FUNCTION argus_retention_settings_fit();

-- Evidence holds.
CREATE TABLE evidence_holds (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    case_reference text NOT NULL CHECK (length(case_reference) BETWEEN 1 AND 200),
    owner text NOT NULL CHECK (length(owner) BETWEEN 1 AND 200),
    review_at timestamptz NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz,
    released_at timestamptz,
    released_by text NOT NULL DEFAULT '',
    release_reason text NOT NULL DEFAULT '',
    review_notified_for timestamptz,  -- the review date a notice was last raised for (a new date raises a new one)
    CHECK (end_time > start_time),
    CHECK ((released_at IS NULL) = (released_by = ''))
);

CREATE TABLE evidence_hold_cameras (
    hold_id uuid NOT NULL REFERENCES evidence_holds (id),
    camera text NOT NULL CHECK (camera ~ '^[A-Za-z0-9_-]{1,64}$'),
    PRIMARY KEY (hold_id, camera)
);

CREATE INDEX evidence_hold_cameras_camera_idx ON evidence_hold_cameras (camera);
CREATE INDEX evidence_holds_active_idx ON evidence_holds (review_at) WHERE released_at IS NULL;

CREATE FUNCTION argus_evidence_holds_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'evidence holds are released, never deleted' USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER evidence_holds_keep BEFORE DELETE ON evidence_holds
    FOR EACH ROW EXECUTE FUNCTION argus_evidence_holds_keep();
CREATE TRIGGER evidence_hold_cameras_keep BEFORE DELETE ON evidence_hold_cameras
    FOR EACH ROW EXECUTE FUNCTION argus_evidence_holds_keep();

-- What holds protect now: one row per camera of every hold not released.
CREATE VIEW retention_active_holds AS
SELECT hc.camera, h.id AS hold_id, h.start_time, h.end_time
FROM evidence_holds h JOIN evidence_hold_cameras hc ON hc.hold_id = h.id
WHERE h.released_at IS NULL;

-- Every camera with at least one segment row, by a loose index scan of the primary key (one probe per camera).
CREATE FUNCTION argus_recorded_cameras() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE c(camera) AS (
        (SELECT camera FROM segments ORDER BY camera LIMIT 1)
        UNION ALL
        SELECT (SELECT s.camera FROM segments s WHERE s.camera > c.camera ORDER BY s.camera LIMIT 1)
        FROM c WHERE c.camera IS NOT NULL
    )
    SELECT camera FROM c WHERE camera IS NOT NULL
$$;

-- The retention of one camera and where it comes from (scope and subject of the policy that applies).
CREATE FUNCTION argus_retention_policy(cam text) RETURNS TABLE (days integer, scope text, subject text)
LANGUAGE sql STABLE AS $$
    WITH found AS (
        SELECT p.days, p.scope, p.subject, 1 AS rank
        FROM retention_policies p WHERE p.scope = 'camera' AND p.subject = cam
        UNION ALL
        SELECT p.days, p.scope, p.subject, 2
        FROM retention_group_members m
        JOIN retention_policies p ON p.scope = 'group' AND p.subject = m.group_id
        WHERE m.camera = cam
        UNION ALL
        SELECT p.days, p.scope, p.subject, 3
        FROM cameras c JOIN retention_policies p ON p.scope = 'site' AND p.subject = c.site_id
        WHERE c.id = cam
        UNION ALL
        SELECT p.days, p.scope, p.subject, 4 FROM retention_policies p WHERE p.scope = 'default'
        UNION ALL
        SELECT 31, 'default', '*', 5
    )
    SELECT LEAST(GREATEST(f.days, b.min_days), b.max_days), f.scope, f.subject
    FROM found f CROSS JOIN retention_settings b
    ORDER BY f.rank
    LIMIT 1
$$;

-- For every recorded camera at `at_time`: its retention and the cutoff (a segment ending at or before it expired).
CREATE FUNCTION argus_retention_cutoffs(at_time timestamptz)
RETURNS TABLE (camera text, days integer, scope text, subject text, cutoff timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.camera, p.days, p.scope, p.subject, at_time - make_interval(days => p.days)
    FROM argus_recorded_cameras() AS c(camera)
    CROSS JOIN LATERAL argus_retention_policy(c.camera) p
    ORDER BY c.camera
$$;

-- What a sweep at `at_time` would delete per camera (segments not held), and what holds keep back.
CREATE FUNCTION argus_retention_dry_run(at_time timestamptz)
RETURNS TABLE (
    camera text, days integer, scope text, subject text, cutoff timestamptz,
    segments bigint, bytes bigint, first_start timestamptz, last_end timestamptz,
    held_segments bigint, held_bytes bigint
)
LANGUAGE sql STABLE AS $$
    SELECT c.camera, c.days, c.scope, c.subject, c.cutoff,
           count(x.start_time) FILTER (WHERE NOT x.held),
           coalesce(sum(x.bytes) FILTER (WHERE NOT x.held), 0)::bigint,
           min(x.start_time) FILTER (WHERE NOT x.held),
           max(x.end_time) FILTER (WHERE NOT x.held),
           count(x.start_time) FILTER (WHERE x.held),
           coalesce(sum(x.bytes) FILTER (WHERE x.held), 0)::bigint
    FROM argus_retention_cutoffs(at_time) c
    LEFT JOIN LATERAL (
        SELECT s.start_time, s.end_time, s.bytes,
               EXISTS (
                   SELECT 1 FROM retention_active_holds h
                   WHERE h.camera = s.camera AND h.start_time < s.end_time AND h.end_time > s.start_time
               ) AS held
        FROM segments s
        WHERE s.camera = c.camera AND s.start_time < c.cutoff AND s.end_time <= c.cutoff
    ) x ON true
    GROUP BY c.camera, c.days, c.scope, c.subject, c.cutoff
    ORDER BY c.camera
$$;

-- Sweep runs: one row each, its totals committed with every batch.
CREATE TABLE retention_sweeps (
    id bigserial PRIMARY KEY,
    token uuid NOT NULL DEFAULT gen_random_uuid(),  -- seeds the ids of its audit events (emitted once each)
    pod text NOT NULL DEFAULT '',
    clock_at timestamptz NOT NULL,                  -- the `now` the sweep judged expiry by
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'stopped', 'interrupted', 'failed')),
    segments bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    inits integer NOT NULL DEFAULT 0,
    partitions integer NOT NULL DEFAULT 0,
    gaps integer NOT NULL DEFAULT 0,
    refused integer NOT NULL DEFAULT 0,
    first_start timestamptz,
    last_end timestamptz,
    error text NOT NULL DEFAULT '',
    audited_at timestamptz
);

CREATE INDEX retention_sweeps_unaudited_idx ON retention_sweeps (id) WHERE audited_at IS NULL;

CREATE TABLE retention_sweep_cameras (
    sweep_id bigint NOT NULL REFERENCES retention_sweeps (id) ON DELETE CASCADE,
    camera text NOT NULL,
    segments bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    first_start timestamptz,
    last_end timestamptz,
    PRIMARY KEY (sweep_id, camera)
);

-- Wholly expired days, detached from `segments` and renamed, while their objects are deleted.
CREATE TABLE retention_day_sweeps (
    id bigserial PRIMARY KEY,
    day date NOT NULL,
    table_name text NOT NULL UNIQUE,
    sweep_id bigint REFERENCES retention_sweeps (id) ON DELETE SET NULL,
    state text NOT NULL DEFAULT 'detached' CHECK (state IN ('detached', 'done')),
    cursor_camera text,
    cursor_stream text,
    cursor_start timestamptz,
    cursor_key text,
    segments bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    detached_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE INDEX retention_day_sweeps_open_idx ON retention_day_sweeps (id) WHERE state = 'detached';

-- Init segments that may have lost their last segment: deleted once no segment row refers to them.
CREATE TABLE retention_init_candidates (
    camera text NOT NULL,
    stream text NOT NULL,
    init_key text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (camera, stream, init_key)
);

-- Objects the retention service has put an S3 legal hold on (and must release when no hold covers them).
CREATE TABLE retention_legal_holds (
    object_key text PRIMARY KEY,
    camera text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Storage use per day, camera and stream, computed for past days by the retention service; a day's rows are
-- dropped when a sweep deletes from it and computed again later.
CREATE TABLE retention_usage (
    day date NOT NULL,
    camera text NOT NULL,
    stream text NOT NULL,
    segments bigint NOT NULL,
    bytes bigint NOT NULL,
    first_start timestamptz NOT NULL,
    last_end timestamptz NOT NULL,
    PRIMARY KEY (day, camera, stream)
);

CREATE TABLE retention_usage_days (
    day date PRIMARY KEY,
    computed_at timestamptz NOT NULL DEFAULT now()
);

-- Storage use per camera and stream: the figures kept for past days plus a live count of every other day
-- (today, yesterday, days not computed yet, the default partition), each a range scan of its own partitions.
CREATE FUNCTION argus_storage_usage_parts()
RETURNS TABLE (camera text, stream text, segments bigint, bytes bigint, first_start timestamptz, last_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lo timestamptz := '-infinity';
    hi timestamptz;
    cached date;
BEGIN
    RETURN QUERY
    SELECT u.camera, u.stream, u.segments, u.bytes, u.first_start, u.last_end
    FROM retention_usage u JOIN retention_usage_days d ON d.day = u.day;
    FOR cached IN SELECT d.day FROM retention_usage_days d ORDER BY d.day LOOP
        hi := cached::timestamp AT TIME ZONE 'UTC';
        IF hi > lo THEN
            RETURN QUERY
            SELECT s.camera, s.stream, count(*), sum(s.bytes)::bigint, min(s.start_time), max(s.end_time)
            FROM segments s WHERE s.start_time >= lo AND s.start_time < hi GROUP BY s.camera, s.stream;
        END IF;
        lo := (cached + 1)::timestamp AT TIME ZONE 'UTC';
    END LOOP;
    RETURN QUERY
    SELECT s.camera, s.stream, count(*), sum(s.bytes)::bigint, min(s.start_time), max(s.end_time)
    FROM segments s WHERE s.start_time >= lo GROUP BY s.camera, s.stream;
END
$$;

CREATE FUNCTION argus_storage_usage()
RETURNS TABLE (camera text, stream text, segments bigint, bytes bigint, first_start timestamptz, last_end timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT p.camera, p.stream, sum(p.segments)::bigint, sum(p.bytes)::bigint, min(p.first_start), max(p.last_end)
    FROM argus_storage_usage_parts() p GROUP BY p.camera, p.stream ORDER BY p.camera, p.stream
$$;
