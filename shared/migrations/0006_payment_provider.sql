-- Payments through a provider (README, "Payments"): the provider's PaymentIntent
-- behind each payment, the states between asking and knowing, and the provider's
-- events received (a webhook delivered twice changes nothing).

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
    ('REQUIRES_PAYMENT', 'PROCESSING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'REFUNDING',
     'REFUNDED'));
-- `stripe`, or `none` for a free course that never reaches a provider.
ALTER TABLE payments ADD COLUMN provider text;
ALTER TABLE payments ADD COLUMN provider_payment_id text UNIQUE;
ALTER TABLE payments ADD COLUMN client_secret text;
-- When the provider confirmed that the intent can no longer take money.
ALTER TABLE payments ADD COLUMN intent_cancelled_at timestamptz;
ALTER TABLE payments ADD COLUMN refund_id text;
-- What the reconciler looks for: payments still waiting for the provider's word.
CREATE INDEX payments_unsettled ON payments (updated_at)
    WHERE status IN ('REQUIRES_PAYMENT', 'PROCESSING', 'REFUNDING')
       OR (status = 'CANCELLED' AND provider_payment_id IS NOT NULL
           AND intent_cancelled_at IS NULL);

CREATE TABLE provider_events (
    event_id    text        PRIMARY KEY,
    event_type  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- When the reconciler last asked the provider about the payment.
ALTER TABLE payments ADD COLUMN reconciled_at timestamptz;

-- Who is asking the provider for the payment's refund, until when: one asker at a time
-- (the provider's idempotency key makes a second refund impossible at Stripe; the
-- embedded fake ignores keys, and a refund must never be made twice anywhere).
ALTER TABLE payments ADD COLUMN refund_lease_until timestamptz;
