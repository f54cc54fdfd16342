-- gold.daily_traffic_sources for the days in touched_days(partition_date).
-- Inputs: page_views, order_payments (silver), rates. A session's source is the
-- traffic_source of its first page view of the day (sessions are cut at midnight in the
-- reporting time zone); an order placed in a session with no page view that day is 'unknown'.
WITH views AS (
    SELECT local_date(event_ts) AS partition_date, session_id, user_id, traffic_source,
           event_ts, event_id
    FROM page_views
    WHERE local_date(event_ts) IN (SELECT partition_date FROM touched_days)
),
session_source AS (
    SELECT partition_date, session_id, traffic_source
    FROM (
        SELECT partition_date, session_id, traffic_source,
               row_number() OVER (PARTITION BY partition_date, session_id
                                  ORDER BY event_ts, event_id) AS rn
        FROM views
        WHERE session_id IS NOT NULL
    ) ranked
    WHERE rn = 1
),
visits AS (
    SELECT v.partition_date,
           COALESCE(s.traffic_source, v.traffic_source) AS traffic_source,
           COUNT(DISTINCT v.session_id) AS sessions,
           COUNT(DISTINCT v.user_id) AS visitors
    FROM views v
    LEFT JOIN session_source s
           ON s.partition_date = v.partition_date AND s.session_id = v.session_id
    GROUP BY v.partition_date, COALESCE(s.traffic_source, v.traffic_source)
),
orders AS (
    SELECT local_date(op.order_ts) AS partition_date,
           COALESCE(s.traffic_source, 'unknown') AS traffic_source,
           op.user_id,
           op.fully_paid,
           ROUND(op.total_amount * r.to_reporting, 2) AS amount
    FROM order_payments op
    JOIN rates r ON r.currency = op.currency
    LEFT JOIN session_source s
           ON s.partition_date = local_date(op.order_ts) AND s.session_id = op.session_id
    WHERE local_date(op.order_ts) IN (SELECT partition_date FROM touched_days)
),
sales AS (
    SELECT partition_date, traffic_source,
           COUNT(DISTINCT user_id) AS purchasers,
           COUNT(*) AS orders_placed,
           SUM(CASE WHEN fully_paid THEN 1 ELSE 0 END) AS paid_orders,
           SUM(CASE WHEN fully_paid THEN amount ELSE 0 END) AS revenue
    FROM orders
    GROUP BY partition_date, traffic_source
),
joined AS (
    SELECT COALESCE(v.partition_date, s.partition_date) AS partition_date,
           COALESCE(v.traffic_source, s.traffic_source) AS traffic_source,
           COALESCE(v.sessions, 0) AS sessions,
           COALESCE(v.visitors, 0) AS visitors,
           COALESCE(s.purchasers, 0) AS purchasers,
           COALESCE(s.orders_placed, 0) AS orders_placed,
           COALESCE(s.paid_orders, 0) AS paid_orders,
           COALESCE(s.revenue, 0) AS revenue
    FROM visits v
    FULL OUTER JOIN sales s
           ON s.partition_date = v.partition_date AND s.traffic_source = v.traffic_source
)
SELECT partition_date,
       traffic_source,
       CAST(sessions AS BIGINT) AS sessions,
       CAST(visitors AS BIGINT) AS visitors,
       CAST(purchasers AS BIGINT) AS purchasers,
       CAST(orders_placed AS BIGINT) AS orders_placed,
       CAST(paid_orders AS BIGINT) AS paid_orders,
       CAST(revenue AS DECIMAL(18, 2)) AS revenue,
       CAST(CASE WHEN visitors = 0 THEN 0
                 ELSE ROUND(CAST(purchasers AS DOUBLE) / visitors, 6) END
            AS DECIMAL(9, 6)) AS conversion_rate,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM joined
