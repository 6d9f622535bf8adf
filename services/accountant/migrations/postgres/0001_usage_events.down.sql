DROP TABLE usage_streams;
DROP TABLE usage_events;
