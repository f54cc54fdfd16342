-- gold.funnel_daily for the days in touched_days(partition_date).
-- Inputs: page_views, cart_events, orders (silver). A session counts once per day (days in
-- the reporting time zone) and reaches a step if it had that event that day: a product
-- page view, an add_to_cart, a checkout page view, an order placed.
WITH steps AS (
    SELECT local_date(event_ts) AS partition_date, session_id,
           CASE WHEN page_type = 'product' THEN 1 ELSE 0 END AS product_view,
           0 AS cart,
           CASE WHEN page_type = 'checkout' THEN 1 ELSE 0 END AS checkout,
           0 AS purchase
    FROM page_views
    UNION ALL
    SELECT local_date(event_ts), session_id,
           0, CASE WHEN event_type = 'add_to_cart' THEN 1 ELSE 0 END, 0, 0
    FROM cart_events
    UNION ALL
    SELECT local_date(event_ts), session_id, 0, 0, 0, 1
    FROM orders
),
sessions AS (
    SELECT partition_date, session_id,
           MAX(product_view) AS product_view, MAX(cart) AS cart,
           MAX(checkout) AS checkout, MAX(purchase) AS purchase
    FROM steps
    WHERE session_id IS NOT NULL
      AND partition_date IN (SELECT partition_date FROM touched_days)
    GROUP BY partition_date, session_id
),
days AS (
    SELECT partition_date,
           COUNT(*) AS sessions,
           SUM(product_view) AS product_view_sessions,
           SUM(cart) AS cart_sessions,
           SUM(checkout) AS checkout_sessions,
           SUM(purchase) AS purchase_sessions
    FROM sessions
    GROUP BY partition_date
)
SELECT partition_date,
       CAST(sessions AS BIGINT) AS sessions,
       CAST(product_view_sessions AS BIGINT) AS product_view_sessions,
       CAST(cart_sessions AS BIGINT) AS cart_sessions,
       CAST(checkout_sessions AS BIGINT) AS checkout_sessions,
       CAST(purchase_sessions AS BIGINT) AS purchase_sessions,
       CAST(ROUND(CAST(product_view_sessions AS DOUBLE) / sessions, 6) AS DECIMAL(9, 6))
           AS product_view_rate,
       CAST(ROUND(CAST(cart_sessions AS DOUBLE) / sessions, 6) AS DECIMAL(9, 6)) AS cart_rate,
       CAST(ROUND(CAST(checkout_sessions AS DOUBLE) / sessions, 6) AS DECIMAL(9, 6))
           AS checkout_rate,
       CAST(ROUND(CAST(purchase_sessions AS DOUBLE) / sessions, 6) AS DECIMAL(9, 6))
           AS purchase_rate,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM days
