-- The ledger: one row per usage event, idempotent by event_id, and the
-- catch-up high-water mark of every worker journal.  day is 'YYYY-MM-DD'
-- (UTC), cached 0/1.
CREATE TABLE usage_events (
	event_id TEXT PRIMARY KEY,
	ts_ms INTEGER NOT NULL,
	day TEXT NOT NULL,
	request_id TEXT NOT NULL,
	worker_id TEXT NOT NULL,
	seq INTEGER NOT NULL,
	subject_type TEXT NOT NULL,
	subject_id TEXT NOT NULL,
	ip TEXT NOT NULL,
	provider TEXT NOT NULL,
	model TEXT NOT NULL,
	input_tokens INTEGER NOT NULL,
	output_tokens INTEGER NOT NULL,
	cache_read_tokens INTEGER NOT NULL,
	cache_write_tokens INTEGER NOT NULL,
	cost_micro_usd INTEGER NOT NULL,
	cached INTEGER NOT NULL,
	status TEXT NOT NULL,
	http_status INTEGER NOT NULL,
	upstream_ms INTEGER NOT NULL,
	total_ms INTEGER NOT NULL,
	received_ms INTEGER NOT NULL
);
CREATE INDEX usage_events_subject_day
	ON usage_events (subject_type, subject_id, day);
CREATE INDEX usage_events_day ON usage_events (day);
CREATE INDEX usage_events_worker_seq ON usage_events (worker_id, seq);
CREATE TABLE usage_streams (
	worker_id TEXT PRIMARY KEY,
	committed_seq INTEGER NOT NULL,
	updated_ms INTEGER NOT NULL
);
