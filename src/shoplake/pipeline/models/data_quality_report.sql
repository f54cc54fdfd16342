-- gold.data_quality_report for the days in touched_days(partition_date): per day of
-- arrival in bronze (reporting time zone) and the silver table each record was meant for.
-- Inputs: bronze(topic, partition, offset, event_type, ingest_ts) and consumed(topic,
-- partition, start_offset, end_offset): the report is over the bronze records from
-- start_offset (0 for all of them, a step's start for what it adds) to end_offset; where
-- each went, by lineage: valid(…, is_late) — every event table —, quarantined(…, reason),
-- duplicates(…); event_tables(event_type, table_name). Records of no known type: 'unknown'.
WITH outcomes AS (
    SELECT topic, "partition", "offset", 'valid' AS outcome, CAST(NULL AS VARCHAR) AS reason,
           is_late
    FROM valid
    UNION ALL
    SELECT topic, "partition", "offset", 'quarantined', reason, FALSE FROM quarantined
    UNION ALL
    SELECT topic, "partition", "offset", 'duplicate', CAST(NULL AS VARCHAR), FALSE
    FROM duplicates
),
arrived AS (
    SELECT local_date(b.ingest_ts) AS partition_date,
           COALESCE(e.table_name, 'unknown') AS table_name,
           b.ingest_ts, o.outcome, o.reason, o.is_late
    FROM bronze b
    JOIN consumed c
      ON c.topic = b.topic AND c."partition" = b."partition"
     AND b."offset" >= c.start_offset AND b."offset" < c.end_offset
    LEFT JOIN outcomes o
           ON o.topic = b.topic AND o."partition" = b."partition" AND o."offset" = b."offset"
    LEFT JOIN event_tables e ON e.event_type = b.event_type
    WHERE local_date(b.ingest_ts) IN (SELECT partition_date FROM touched_days)
),
reasons AS (
    SELECT partition_date, table_name, reason, COUNT(*) AS n
    FROM arrived
    WHERE outcome = 'quarantined'
    GROUP BY partition_date, table_name, reason
),
reason_json AS (  -- reason codes are identifiers: no escaping needed
    SELECT partition_date, table_name,
           '{' || string_agg('"' || reason || '": ' || CAST(n AS VARCHAR), ', ' ORDER BY reason)
               || '}' AS quarantine_reasons
    FROM reasons
    GROUP BY partition_date, table_name
)
SELECT a.partition_date,
       a.table_name,
       CAST(COUNT(*) AS BIGINT) AS rows_in,
       CAST(SUM(CASE WHEN a.outcome = 'valid' THEN 1 ELSE 0 END) AS BIGINT) AS rows_valid,
       CAST(SUM(CASE WHEN a.outcome = 'quarantined' THEN 1 ELSE 0 END) AS BIGINT)
           AS rows_quarantined,
       COALESCE(r.quarantine_reasons, '{}') AS quarantine_reasons,
       CAST(SUM(CASE WHEN a.outcome = 'duplicate' THEN 1 ELSE 0 END) AS BIGINT)
           AS duplicates_dropped,
       CAST(SUM(CASE WHEN a.is_late THEN 1 ELSE 0 END) AS BIGINT) AS late_events,
       epoch(CAST($now AS TIMESTAMP WITH TIME ZONE)) - epoch(MAX(a.ingest_ts)) AS freshness_s,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM arrived a
LEFT JOIN reason_json r ON r.partition_date = a.partition_date AND r.table_name = a.table_name
GROUP BY a.partition_date, a.table_name, r.quarantine_reasons
