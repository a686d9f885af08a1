-- 004_trace_context.sql: W3C trace context kept with commands and events.

-- The traceparent a command arrived with (the gateway's span), so a command record leads to its
-- trace.
ALTER TABLE commands ADD COLUMN traceparent text;

-- The processor's span in the trace of the command that made the event, and the tracestate it
-- passed on; the relay publishes both as the event's ce_traceparent and ce_tracestate.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
