-- What an operator needs once the outbox has forgotten: a booking's history and
-- the dead letters (README, "Operating it").

-- Every event a function emitted, kept when the outbox prunes its rows after 24 h.
-- Filled by the database from each new outbox row (the trigger below), so no
-- function pays a round trip for it and no code path can forget it.
CREATE TABLE event_log (
    event_id   text        PRIMARY KEY,
    topic      text        NOT NULL,
    event_type text        NOT NULL,
    subject    text        NOT NULL,
    source     text        NOT NULL,
    event_time timestamptz NOT NULL,
    trace_id   text
);
CREATE INDEX event_log_subject ON event_log (subject, event_time);

CREATE FUNCTION log_outbox_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    attrs jsonb;
BEGIN
    SELECT jsonb_object_agg(h ->> 0, h ->> 1) INTO attrs FROM jsonb_array_elements(NEW.headers) h;
    INSERT INTO event_log (event_id, topic, event_type, subject, source, event_time, trace_id)
    VALUES (NEW.event_id, NEW.topic, coalesce(attrs ->> 'ce_type', ''),
            coalesce(attrs ->> 'ce_subject', convert_from(NEW.record_key, 'UTF8')),
            coalesce(attrs ->> 'ce_source', ''),
            coalesce(CAST(attrs ->> 'ce_time' AS timestamptz), NEW.created_at),
            nullif(split_part(coalesce(attrs ->> 'ce_traceparent', ''), '-', 2), ''))
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_to_event_log AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION log_outbox_event();

-- Who handled what: the inbox row now says what it was about and who sent it
-- (the same INSERT, three more values), so a booking's handlings are found by its id,
-- including events no outbox row ever held (the hold-expiry watcher's).
ALTER TABLE inbox ADD COLUMN subject text;
ALTER TABLE inbox ADD COLUMN source text;
ALTER TABLE inbox ADD COLUMN event_time timestamptz;
CREATE INDEX inbox_subject ON inbox (subject) WHERE subject IS NOT NULL;

-- The dead letters, one row per (event, function it failed in), fed by the
-- record_dead_letter reaction from marketplace.dead-letter. status: DEAD (waiting
-- for a fix and a redrive) or REDRIVEN (re-delivered and accepted).
CREATE TABLE dead_letters (
    dead_letter_id    uuid        PRIMARY KEY,
    event_id          text        NOT NULL,
    function          text        NOT NULL,
    destination       text        NOT NULL,
    topic             text,
    event_type        text        NOT NULL,
    subject           text,
    source            text        NOT NULL,
    error_code        integer     NOT NULL,
    reason            text        NOT NULL,
    headers           jsonb       NOT NULL,
    body              bytea       NOT NULL,
    status            text        NOT NULL DEFAULT 'DEAD' CHECK (status IN ('DEAD', 'REDRIVEN')),
    failures          integer     NOT NULL DEFAULT 1,
    first_failed_at   timestamptz NOT NULL DEFAULT now(),
    last_failed_at    timestamptz NOT NULL DEFAULT now(),
    redrives          integer     NOT NULL DEFAULT 0,
    last_redriven_at  timestamptz,
    last_redriven_by  uuid,
    UNIQUE (event_id, function)
);
CREATE INDEX dead_letters_failed ON dead_letters (last_failed_at);
CREATE INDEX dead_letters_subject ON dead_letters (subject) WHERE subject IS NOT NULL;

-- Every redrive: who asked, what they asked for, and what came of it.
CREATE TABLE redrives (
    redrive_id      uuid        PRIMARY KEY,
    requested_by    uuid        NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    filter          jsonb       NOT NULL,
    dead_letter_ids uuid[]      NOT NULL,
    delivered       integer     NOT NULL,
    failed          integer     NOT NULL
);
