-- The audit log: an append-only hash chain of audit events (see argus_core.audit.chain for the canonical form).
--
-- The chain columns (seq, recorded_ns, prev_hash, hash, body) are written by the audit service only; the columns
-- used to search (event_id, at_ns, actor, action, camera) are generated from the body by Postgres, so they cannot
-- disagree with what the chain vouches for.
CREATE TABLE audit_log (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    recorded_ns bigint NOT NULL,
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    body text NOT NULL,
    event_id text GENERATED ALWAYS AS ((body::jsonb) ->> 'id') STORED,
    at_ns bigint GENERATED ALWAYS AS (((body::jsonb) ->> 'at_ns')::bigint) STORED,
    actor text GENERATED ALWAYS AS ((body::jsonb) -> 'actor' ->> 'subject') STORED,
    action text GENERATED ALWAYS AS ((body::jsonb) ->> 'action') STORED,
    camera text GENERATED ALWAYS AS ((body::jsonb) ->> 'camera') STORED
);

-- An event is stored once, however often it is delivered.
CREATE UNIQUE INDEX audit_log_event_id_key ON audit_log (event_id);
CREATE INDEX audit_log_at_idx ON audit_log (at_ns);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
CREATE INDEX audit_log_camera_idx ON audit_log (camera, seq);
CREATE INDEX audit_log_action_idx ON audit_log (action text_pattern_ops, seq);

-- After an audited purge, the chain starts after the newest anchor: entry `seq` had hash `hash`, vouched for by the
-- signed checkpoint at `checkpoint_key` in the audit bucket.
CREATE TABLE audit_anchor (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    recorded_ns bigint NOT NULL,
    entries_purged bigint NOT NULL,
    cutoff_ns bigint NOT NULL,
    checkpoint_key text NOT NULL,
    created_ns bigint NOT NULL
);

-- The checkpoints this database knows were written (the signed objects in the audit bucket are the evidence).
CREATE TABLE audit_checkpoint (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    kind text NOT NULL,
    object_key text NOT NULL,
    key_id text NOT NULL,
    created_ns bigint NOT NULL
);

-- Nobody changes or removes an entry, an anchor or a checkpoint record. The one exception is the audited purge of
-- entries older than the audit retention: in a transaction that set argus.audit_purge to 'on', entries at or
-- before the newest anchor (written, with its signed checkpoint, first) may be deleted.
CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log'
        AND current_setting('argus.audit_purge', true) = 'on'
        AND OLD.seq <= (SELECT coalesce(max(seq), 0) FROM audit_anchor) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION audit_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
CREATE TRIGGER audit_anchor_append_only BEFORE UPDATE OR DELETE ON audit_anchor
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_anchor_no_truncate BEFORE TRUNCATE ON audit_anchor
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();

-- The application role (whoever runs the migrations, normally the tables' owner) keeps INSERT and SELECT only. An
-- owner could grant itself the rest back and a superuser ignores privileges, so this stops stray statements; the
-- triggers stop deliberate ones, and the chain with its signed checkpoints shows what a superuser did anyway.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_anchor, audit_checkpoint FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_anchor, audit_checkpoint FROM CURRENT_USER;
