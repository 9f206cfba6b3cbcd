-- The state of the booking saga. One database, each table written by the
-- functions that own it (accounts: auth; courses, tickets: catalogue;
-- bookings: booking; payments: payment).

CREATE TABLE inbox (
    consumer   text        NOT NULL,
    event_id   text        NOT NULL,
    event_type text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE outbox (
    event_id     text        PRIMARY KEY,
    topic        text        NOT NULL,
    record_key   bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

CREATE TABLE accounts (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    full_name     text        NOT NULL,
    phone         text,
    role          text        NOT NULL CHECK (role IN ('user', 'author', 'admin')),
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX accounts_email ON accounts (lower(email));

CREATE TABLE refresh_tokens (
    token_hash text        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES accounts,
    family_id  uuid        NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE courses (
    course_id   uuid        PRIMARY KEY,
    author_id   uuid        NOT NULL,
    title       text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    price_cents bigint      NOT NULL CHECK (price_cents >= 0),
    currency    char(3)     NOT NULL,
    starts_at   timestamptz NOT NULL,
    capacity    integer     NOT NULL CHECK (capacity BETWEEN 1 AND 10000),
    status      text        NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'INACTIVE')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    ticket_id  uuid        PRIMARY KEY,
    course_id  uuid        NOT NULL REFERENCES courses,
    status     text        NOT NULL DEFAULT 'AVAILABLE' CHECK (status IN ('AVAILABLE', 'RESERVED', 'SOLD')),
    booking_id uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'AVAILABLE') = (booking_id IS NULL))
);
CREATE INDEX tickets_course_status ON tickets (course_id, status);
-- A booking holds at most one ticket, so a ticket is sold to at most one booking.
CREATE UNIQUE INDEX tickets_booking ON tickets (booking_id) WHERE booking_id IS NOT NULL;

CREATE TABLE bookings (
    booking_id      uuid        PRIMARY KEY,
    course_id       uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    ticket_id       uuid,
    status          text        NOT NULL DEFAULT 'PENDING' CHECK (status IN
                    ('PENDING', 'AWAITING_PAYMENT', 'CONFIRMED', 'REJECTED', 'CANCELLED', 'EXPIRED')),
    amount_cents    bigint,
    currency        char(3),
    hold_expires_at timestamptz,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bookings_user ON bookings (user_id, created_at);
CREATE INDEX bookings_course ON bookings (course_id);
CREATE INDEX bookings_holds ON bookings (hold_expires_at) WHERE status = 'AWAITING_PAYMENT';

CREATE TABLE payments (
    payment_id     uuid        PRIMARY KEY,
    booking_id     uuid        NOT NULL UNIQUE,
    user_id        uuid        NOT NULL,
    amount_cents   bigint      NOT NULL,
    currency       char(3)     NOT NULL,
    status         text        NOT NULL DEFAULT 'REQUIRES_PAYMENT' CHECK (status IN
                   ('REQUIRES_PAYMENT', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'REFUNDED')),
    payment_method text,
    charge_id      text,
    decline_code   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE idempotency_keys (
    user_id      uuid        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status_code  integer     NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
