-- PTZ tours (patrols) and parking, run by the ptz service. Control leases live on the bus (KV leases-ptz), not here.
CREATE TABLE ptz_tours (
    camera_id text NOT NULL REFERENCES cameras (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- [{"preset": "1", "dwell_s": 10.0, "speed": 0.5}, ...] in visiting order
    steps jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array' AND jsonb_array_length(steps) > 0),
    active boolean NOT NULL DEFAULT false,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (camera_id, name)
);

-- At most one running tour per camera.
CREATE UNIQUE INDEX ptz_tours_one_active_idx ON ptz_tours (camera_id) WHERE active;

CREATE TABLE ptz_park (
    camera_id text PRIMARY KEY REFERENCES cameras (id) ON DELETE CASCADE,
    enabled boolean NOT NULL DEFAULT true,
    idle_s double precision NOT NULL CHECK (idle_s > 0),
    preset text,  -- NULL: the camera's home position
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
