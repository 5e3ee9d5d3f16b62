-- Playback. Every playback query names one camera and stream and bounds start_time on both sides, which the day
-- partitions of migration 0002 prune (see docs/benchmarks.md, playback, for figures at 31 days x 100 cameras).
--
-- Playlists, seeks and clips read the covering primary key (camera, stream, start_time, object_key) INCLUDE
-- (end_time, duration_ms, ...): it has every column they need. A timeline needs only start_time and end_time of
-- every segment (14,400 a camera-day), and that primary key is wide: 246 MB per day of 100 cameras, 2.5 MB per
-- camera-day, so a timeline that is not in memory reads about 315 pages. This slim index holds just what the spans
-- query reads, 68 MB a day and 87 pages a camera-day: a cold one-day timeline goes from 27 ms to 7 ms at p50
-- (50 to 15 ms at p95), and a month from about a second to a few hundred milliseconds. It costs one more index
-- entry per segment written (17 a second for 100 cameras) and about 2 GB a month for 100 cameras. Made on the
-- partitioned table, it is made on every partition, including those argus_segments_partition() attaches later.
-- (On a deployment that already holds months of footage this CREATE INDEX takes about a minute per month and
-- blocks segment inserts meanwhile: the recorders spool and catch up.)
CREATE INDEX segments_spans_idx ON segments (camera, stream, start_time) INCLUDE (end_time);

-- The record of each clip cut: an MP4 is streamed to the client as it is built, so its SHA-256 is known only once
-- the last byte is out. The row is written when the request starts (status 'running') and completed before the
-- response ends, so a client that has read the whole body can fetch the digest at once
-- (GET /api/v1/playback/clips/{id}); the same digest is in the 'playback.clip.complete' audit event.
CREATE TABLE playback_clips (
    id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    camera text NOT NULL,
    stream text NOT NULL CHECK (stream IN ('main', 'sub')),
    requested_from timestamptz NOT NULL,
    requested_until timestamptz NOT NULL,
    start_time timestamptz,            -- the keyframe the clip starts on (at or before requested_from)
    end_time timestamptz,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'complete', 'aborted', 'failed')),
    bytes bigint,
    packets integer,
    segments integer,
    sha256 bytea CHECK (sha256 IS NULL OR octet_length(sha256) = 32),
    subject text NOT NULL,
    org text NOT NULL DEFAULT '',
    detail text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK (requested_until > requested_from)
);

CREATE INDEX playback_clips_camera_idx ON playback_clips (camera, created_at);
