-- gold.daily_customer_analytics: one row per customer and day they were active (a page
-- view, cart event or order that day, reporting time zone), for days >= $from_day.
-- Inputs: page_views, cart_events, orders, order_payments (silver), rates.
-- Value to date counts paid orders placed on or before the day, in the reporting currency.
-- Segment, first match: At Risk (last paid order more than 30 days before the day),
-- High Value (lifetime_value >= 500), New (one paid order), Regular (other buyers),
-- Prospect (no paid order).
-- page_views and cart_events are counted by weight: a row stands for that many events
-- (1 read from the table; the model holds them compacted, see pipeline/digests.py).
WITH activity AS (
    SELECT local_date(event_ts) AS partition_date, user_id, session_id,
           weight AS page_view, 0 AS cart_add
    FROM page_views
    UNION ALL
    SELECT local_date(event_ts), user_id, session_id, 0,
           CASE WHEN event_type = 'add_to_cart' THEN weight ELSE 0 END
    FROM cart_events
    UNION ALL
    SELECT local_date(event_ts), user_id, session_id, 0, 0
    FROM orders
),
active AS (
    SELECT partition_date, user_id,
           COUNT(DISTINCT session_id) AS sessions,
           SUM(page_view) AS page_views,
           SUM(cart_add) AS cart_adds
    FROM activity
    WHERE user_id IS NOT NULL AND partition_date >= $from_day
    GROUP BY partition_date, user_id
),
paid AS (
    SELECT op.user_id, op.order_ts, local_date(op.order_ts) AS order_date,
           ROUND(op.total_amount * r.to_reporting, 2) AS amount
    FROM order_payments op
    JOIN rates r ON r.currency = op.currency
    WHERE op.fully_paid
),
to_date AS (
    SELECT a.partition_date, a.user_id, a.sessions, a.page_views, a.cart_adds,
           COUNT(p.order_ts) AS paid_orders,
           COALESCE(SUM(p.amount), 0) AS lifetime_value,
           COALESCE(SUM(CASE WHEN p.order_date = a.partition_date THEN p.amount END), 0)
               AS total_spent,
           MIN(p.order_ts) AS first_order_ts,
           MAX(p.order_ts) AS last_order_ts
    FROM active a
    LEFT JOIN paid p ON p.user_id = a.user_id AND p.order_date <= a.partition_date
    GROUP BY a.partition_date, a.user_id, a.sessions, a.page_views, a.cart_adds
)
SELECT partition_date,
       user_id,
       CAST(lifetime_value AS DECIMAL(18, 2)) AS lifetime_value,
       CAST(paid_orders AS BIGINT) AS paid_orders,
       CAST(total_spent AS DECIMAL(18, 2)) AS total_spent,
       CAST(sessions AS BIGINT) AS sessions,
       CAST(page_views AS BIGINT) AS page_views,
       CAST(cart_adds AS BIGINT) AS cart_adds,
       CAST(CASE WHEN paid_orders = 0 THEN 0
                 ELSE ROUND(CAST(lifetime_value AS DOUBLE) / paid_orders, 2) END
            AS DECIMAL(18, 2)) AS avg_order_value,
       first_order_ts,
       last_order_ts,
       CASE WHEN paid_orders > 0
                 AND local_date(last_order_ts) < partition_date - INTERVAL '30' DAY
                 THEN 'At Risk'
            WHEN lifetime_value >= 500 THEN 'High Value'
            WHEN paid_orders = 1 THEN 'New'
            WHEN paid_orders > 1 THEN 'Regular'
            ELSE 'Prospect' END AS customer_segment,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM to_date
