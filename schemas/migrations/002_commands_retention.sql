-- 002_commands_retention.sql: lets the processor find expired command records without a scan.
CREATE INDEX commands_finished_at ON commands (finished_at) WHERE status <> 'accepted';
