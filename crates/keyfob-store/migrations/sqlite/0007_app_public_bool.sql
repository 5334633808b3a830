-- Whether an application is public is a boolean. SQLite keeps booleans as the integers 0 and 1,
-- which the column already holds, so nothing changes here; the file keeps both trees alike.
SELECT 1;
