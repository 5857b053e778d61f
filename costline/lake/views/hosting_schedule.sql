-- The student's dated hosting schedule (since, until, usd_per_hour), from [pricing]: NULL ends are open.
-- Filled in by costline.lake.views_sql: {schedule} is a VALUES list (costline.pricing.hosting_schedule).
CREATE OR REPLACE VIEW hosting_schedule AS {schedule}
