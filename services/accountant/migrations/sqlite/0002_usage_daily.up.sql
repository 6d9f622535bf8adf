-- Daily roll-ups per UTC day, subject, provider and model, kept in the
-- same transaction as the events they count (filled here from the events
-- already recorded).
CREATE TABLE usage_daily (
	day TEXT NOT NULL,
	subject_type TEXT NOT NULL,
	subject_id TEXT NOT NULL,
	provider TEXT NOT NULL,
	model TEXT NOT NULL,
	requests INTEGER NOT NULL,
	errors INTEGER NOT NULL,
	cached INTEGER NOT NULL,
	input_tokens INTEGER NOT NULL,
	output_tokens INTEGER NOT NULL,
	cache_read_tokens INTEGER NOT NULL,
	cache_write_tokens INTEGER NOT NULL,
	cost_micro_usd INTEGER NOT NULL,
	PRIMARY KEY (day, subject_type, subject_id, provider, model)
);
CREATE INDEX usage_daily_subject ON usage_daily (subject_type, subject_id, day);
INSERT INTO usage_daily
SELECT day, subject_type, subject_id, provider, model, count(*),
	sum(status = 'error'), sum(cached != 0),
	sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
	sum(cache_write_tokens), sum(cost_micro_usd)
FROM usage_events
GROUP BY day, subject_type, subject_id, provider, model;
-- Only rows really inserted fire it: a duplicate event (ON CONFLICT DO
-- NOTHING) is never counted twice.
CREATE TRIGGER usage_events_daily AFTER INSERT ON usage_events
BEGIN
	INSERT INTO usage_daily (day, subject_type, subject_id, provider,
		model, requests, errors, cached, input_tokens, output_tokens,
		cache_read_tokens, cache_write_tokens, cost_micro_usd)
	VALUES (NEW.day, NEW.subject_type, NEW.subject_id, NEW.provider,
		NEW.model, 1, NEW.status = 'error', NEW.cached != 0,
		NEW.input_tokens, NEW.output_tokens, NEW.cache_read_tokens,
		NEW.cache_write_tokens, NEW.cost_micro_usd)
	ON CONFLICT (day, subject_type, subject_id, provider, model)
	DO UPDATE SET requests = requests + excluded.requests,
		errors = errors + excluded.errors,
		cached = cached + excluded.cached,
		input_tokens = input_tokens + excluded.input_tokens,
		output_tokens = output_tokens + excluded.output_tokens,
		cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
		cache_write_tokens = cache_write_tokens +
			excluded.cache_write_tokens,
		cost_micro_usd = cost_micro_usd + excluded.cost_micro_usd;
END;
