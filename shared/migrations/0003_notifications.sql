-- Every notification the notifications function sent or tried to send.
-- One row per (event, channel): the unique key is what makes a redelivered
-- event send nothing twice. status: SENDING (claimed, a send may be under
-- way), SENT, RETRYING (the provider said "not now"), FAILED (permanent).

CREATE TABLE notifications (
    notification_id     uuid        PRIMARY KEY,
    event_id            text        NOT NULL,
    event_type          text        NOT NULL,
    channel             text        NOT NULL CHECK (channel IN ('email', 'sms')),
    user_id             uuid,
    recipient           text        NOT NULL,
    template            text        NOT NULL,
    subject             text        NOT NULL DEFAULT '',
    status              text        NOT NULL CHECK (status IN ('SENDING', 'SENT', 'RETRYING', 'FAILED')),
    provider_message_id text,
    error               text,
    attempts            integer     NOT NULL DEFAULT 1,
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, channel)
);
CREATE INDEX notifications_user ON notifications (user_id, created_at);
