-- The recording index: one row per stored fMP4 media segment, one row per gap in the recording.
--
-- Sizing: 100 cameras x 14,400 six-second segments a day x 31 days is about 45 M segment rows. The question asked
-- of it is "the segments of camera X (stream S) overlapping [t0, t1]": a one-day timeline must come back in under
-- 100 ms at p95. Choices, and why:
--
-- * Range partitions by day on start_time. A one-day query touches one or two partitions of about 1.4 M rows each
--   (pruned at plan time for literal bounds, at run time for parameters); retention drops or detaches whole days
--   instead of deleting 1.4 M rows one by one (no bloat, no vacuum debt); a partition's index stays small enough to
--   be cached. Monthly partitions would also answer in time but make retention a mass DELETE. Partitions are made
--   ahead by argus_segments_partition() (the recorder calls it for today, tomorrow, and the day of any row it is
--   about to write); a DEFAULT partition catches anything else (a camera clock in 1970), and its rows move into
--   the day's partition when that partition is made.
-- * A btree on (camera, stream, start_time) in every partition (the primary key's leading columns). Segments are
--   at most 10 minutes long (a CHECK), so the overlap query is an index range scan:
--       WHERE camera = $1 AND stream = $2
--         AND start_time >= $t0 - interval '10 minutes' AND start_time < $t1 AND end_time > $t0
--   A BRIN on start_time alone would be tiny and suits time-only sweeps (retention), but rows arrive interleaved
--   from 100 cameras, so every BRIN block range holds every camera and a per-camera query reads the whole day.
-- * object_key completes the primary key: two segments may share a start millisecond when a camera clock steps
--   back (their keys differ by a tag of session and first packet), and a retry of the same segment is an upsert.
-- * No foreign key to cameras: footage outlives a camera's removal from the register (retention removes it).
-- * Times are UTC to the millisecond (what the recorder writes); sha256 is the 32 raw bytes (half the size of hex).
CREATE TABLE segments (
    camera text NOT NULL CHECK (camera ~ '^[A-Za-z0-9_-]{1,64}$'),
    stream text NOT NULL CHECK (stream IN ('main', 'sub')),
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    frames integer NOT NULL CHECK (frames > 0),
    keyframes integer NOT NULL CHECK (keyframes > 0 AND keyframes <= frames),
    bytes bigint NOT NULL CHECK (bytes > 0),
    sha256 bytea NOT NULL CHECK (octet_length(sha256) = 32),
    codec text NOT NULL CHECK (codec IN ('h264', 'h265')),
    width integer NOT NULL CHECK (width >= 0),
    height integer NOT NULL CHECK (height >= 0),
    object_key text NOT NULL,
    init_key text NOT NULL,
    time_trusted boolean NOT NULL,
    session text NOT NULL,             -- the ingest session and packets it holds: where a new recorder resumes
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL CHECK (last_seq >= first_seq),
    repaired_timestamps integer NOT NULL DEFAULT 0 CHECK (repaired_timestamps >= 0),
    recorder text NOT NULL DEFAULT '', -- the pod that stored it
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time >= start_time AND end_time - start_time <= interval '10 minutes'),
    PRIMARY KEY (camera, stream, start_time, object_key)
        INCLUDE (end_time, duration_ms, frames, bytes, init_key, time_trusted, codec, width, height)
) PARTITION BY RANGE (start_time);

CREATE TABLE segments_default PARTITION OF segments DEFAULT;

-- Make the partition of one UTC day if it is missing, moving any rows of that day out of the default partition.
-- Safe to call from many recorders at once (a transaction-level advisory lock serialises the creators).
CREATE FUNCTION argus_segments_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('segments_%s', to_char(day, 'YYYYMMDD'));
    lo timestamptz := (day::timestamp AT TIME ZONE 'UTC');
    hi timestamptz := ((day + 1)::timestamp AT TIME ZONE 'UTC');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('argus.segments.partition'));
    -- Another caller may have made it while we waited: look in the catalog itself (to_regclass may answer from
    -- a cache that an advisory lock does not refresh).
    IF EXISTS (
        SELECT 1 FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
        WHERE i.inhparent = 'segments'::regclass AND c.relname = part
    ) THEN
        RETURN part;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE segments INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM segments_default WHERE start_time >= $1 AND start_time < $2 RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved', part
    ) USING lo, hi;
    EXECUTE format('ALTER TABLE segments ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN part;
END
$$;

-- Gaps are few (a handful per camera per day, more for a flapping camera): one plain table. The overlap query
-- ("gaps of camera X overlapping [t0, t1]") reads the (camera, stream, end_time) index from t0 on and keeps the
-- rows that start before t1; a gap can be days long, so start_time alone cannot bound it.
-- session and last_seq say which packets a gap accounts for (dropped while waiting for a keyframe), so a new
-- recorder resumes after them; they are NULL for a gap with no packet in it (an outage).
CREATE TABLE recording_gaps (
    camera text NOT NULL CHECK (camera ~ '^[A-Za-z0-9_-]{1,64}$'),
    stream text NOT NULL CHECK (stream IN ('main', 'sub')),
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    cause text NOT NULL CHECK (cause IN (
        'camera_offline', 'ingest_failover', 'recorder_failover', 'corrupt_data', 'no_keyframe', 'clock_jump',
        'spool_overflow', 'unknown'
    )),
    detail text NOT NULL DEFAULT '',
    session text,
    last_seq bigint,
    recorder text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time >= start_time),
    PRIMARY KEY (camera, stream, start_time, cause)
);

CREATE INDEX recording_gaps_end_idx ON recording_gaps (camera, stream, end_time);
