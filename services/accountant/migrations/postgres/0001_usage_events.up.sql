-- The ledger: one row per usage event, idempotent by event_id, and the
-- catch-up high-water mark of every worker journal.
CREATE TABLE usage_events (
	event_id TEXT PRIMARY KEY,
	ts_ms BIGINT NOT NULL,
	day DATE NOT NULL,
	request_id TEXT NOT NULL,
	worker_id TEXT NOT NULL,
	seq BIGINT NOT NULL,
	subject_type TEXT NOT NULL,
	subject_id TEXT NOT NULL,
	ip TEXT NOT NULL,
	provider TEXT NOT NULL,
	model TEXT NOT NULL,
	input_tokens BIGINT NOT NULL,
	output_tokens BIGINT NOT NULL,
	cache_read_tokens BIGINT NOT NULL,
	cache_write_tokens BIGINT NOT NULL,
	cost_micro_usd BIGINT NOT NULL,
	cached BOOLEAN NOT NULL,
	status TEXT NOT NULL,
	http_status INTEGER NOT NULL,
	upstream_ms BIGINT NOT NULL,
	total_ms BIGINT NOT NULL,
	received_ms BIGINT NOT NULL
);
CREATE INDEX usage_events_subject_day
	ON usage_events (subject_type, subject_id, day);
CREATE INDEX usage_events_day ON usage_events (day);
CREATE INDEX usage_events_worker_seq ON usage_events (worker_id, seq);
CREATE TABLE usage_streams (
	worker_id TEXT PRIMARY KEY,
	committed_seq BIGINT NOT NULL,
	updated_ms BIGINT NOT NULL
);
