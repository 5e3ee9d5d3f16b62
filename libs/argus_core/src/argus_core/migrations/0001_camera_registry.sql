-- The camera register: every camera Argus pulls, where it is, and how to reach it.
CREATE TABLE sites (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cameras (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name text NOT NULL,
    site_id text REFERENCES sites (id),
    latitude double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude double precision CHECK (longitude BETWEEN -180 AND 180),
    main_url text NOT NULL,
    sub_url text,
    onvif_url text,
    username text,
    password text,
    transport text NOT NULL DEFAULT 'tcp' CHECK (transport IN ('tcp', 'udp')),
    has_ptz boolean NOT NULL DEFAULT false,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cameras_site_idx ON cameras (site_id);
