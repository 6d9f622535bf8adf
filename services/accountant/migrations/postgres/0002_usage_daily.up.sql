-- Daily roll-ups per UTC day, subject, provider and model, kept in the
-- same transaction as the events they count (filled here from the events
-- already recorded).
CREATE TABLE usage_daily (
	day DATE NOT NULL,
	subject_type TEXT NOT NULL,
	subject_id TEXT NOT NULL,
	provider TEXT NOT NULL,
	model TEXT NOT NULL,
	requests BIGINT NOT NULL,
	errors BIGINT NOT NULL,
	cached BIGINT NOT NULL,
	input_tokens BIGINT NOT NULL,
	output_tokens BIGINT NOT NULL,
	cache_read_tokens BIGINT NOT NULL,
	cache_write_tokens BIGINT NOT NULL,
	cost_micro_usd BIGINT NOT NULL,
	PRIMARY KEY (day, subject_type, subject_id, provider, model)
);
CREATE INDEX usage_daily_subject ON usage_daily (subject_type, subject_id, day);
INSERT INTO usage_daily
SELECT day, subject_type, subject_id, provider, model, count(*),
	count(*) FILTER (WHERE status = 'error'),
	count(*) FILTER (WHERE cached),
	sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
	sum(cache_write_tokens), sum(cost_micro_usd)
FROM usage_events
GROUP BY day, subject_type, subject_id, provider, model;
