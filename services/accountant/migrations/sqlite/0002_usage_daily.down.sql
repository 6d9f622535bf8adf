DROP TRIGGER usage_events_daily;
DROP TABLE usage_daily;
