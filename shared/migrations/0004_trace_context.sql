-- A booking's W3C trace context (`traceparent`), set when it is requested, so that
-- paying, cancelling, the sweeper and the hold-expiry watcher continue the booking's
-- trace: one trace per booking. NULL for bookings made before tracing.
ALTER TABLE bookings ADD COLUMN trace_context text;
