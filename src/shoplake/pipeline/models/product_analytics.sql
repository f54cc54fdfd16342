-- gold.product_analytics for the days in touched_days(partition_date).
-- Inputs: page_views, cart_events, order_items, order_payments, product_updates (silver),
-- rates. total_purchases = orders placed that day containing the product; units_sold and
-- revenue count paid orders only (revenue in the reporting currency, per line to the cent).
-- product_name and category: the latest product_update at or before the end of the day
-- (category falls back to the one the day's events carry).
-- page_views and cart_events are counted by weight: a row stands for that many events
-- (1 read from the table; the model holds them compacted, see pipeline/digests.py).
WITH views AS (
    SELECT local_date(event_ts) AS partition_date, product_id,
           SUM(weight) AS total_views, MIN(category) AS category
    FROM page_views
    WHERE product_id IS NOT NULL
      AND local_date(event_ts) IN (SELECT partition_date FROM touched_days)
    GROUP BY local_date(event_ts), product_id
),
carts AS (
    SELECT local_date(event_ts) AS partition_date, product_id,
           SUM(CASE WHEN event_type = 'add_to_cart' THEN weight ELSE 0 END) AS cart_adds,
           SUM(CASE WHEN event_type = 'remove_from_cart' THEN weight ELSE 0 END) AS cart_removes,
           MIN(category) AS category
    FROM cart_events
    WHERE local_date(event_ts) IN (SELECT partition_date FROM touched_days)
    GROUP BY local_date(event_ts), product_id
),
sold AS (
    SELECT local_date(op.order_ts) AS partition_date, i.product_id,
           COUNT(DISTINCT op.order_id) AS total_purchases,
           SUM(CASE WHEN op.fully_paid THEN i.quantity ELSE 0 END) AS units_sold,
           SUM(CASE WHEN op.fully_paid THEN ROUND(i.line_amount * r.to_reporting, 2)
                    ELSE 0 END) AS revenue,
           MIN(i.category) AS category
    FROM order_payments op
    JOIN order_items i ON i.event_id = op.order_event_id
    JOIN rates r ON r.currency = i.currency
    WHERE local_date(op.order_ts) IN (SELECT partition_date FROM touched_days)
    GROUP BY local_date(op.order_ts), i.product_id
),
products AS (
    SELECT partition_date, product_id FROM views
    UNION
    SELECT partition_date, product_id FROM carts
    UNION
    SELECT partition_date, product_id FROM sold
),
catalog AS (
    SELECT partition_date, product_id, name, category
    FROM (
        SELECT p.partition_date, p.product_id, u.name, u.category,
               row_number() OVER (PARTITION BY p.partition_date, p.product_id
                                  ORDER BY u.event_ts DESC, u.event_id DESC) AS rn
        FROM products p
        JOIN product_updates u
          ON u.product_id = p.product_id AND local_date(u.event_ts) <= p.partition_date
    ) ranked
    WHERE rn = 1
),
measured AS (
    SELECT p.partition_date, p.product_id,
           c.name AS product_name,
           COALESCE(c.category, s.category, v.category, k.category) AS category,
           COALESCE(v.total_views, 0) AS total_views,
           COALESCE(k.cart_adds, 0) AS cart_adds,
           COALESCE(k.cart_removes, 0) AS cart_removes,
           COALESCE(s.total_purchases, 0) AS total_purchases,
           COALESCE(s.units_sold, 0) AS units_sold,
           COALESCE(s.revenue, 0) AS revenue
    FROM products p
    LEFT JOIN views v ON v.partition_date = p.partition_date AND v.product_id = p.product_id
    LEFT JOIN carts k ON k.partition_date = p.partition_date AND k.product_id = p.product_id
    LEFT JOIN sold s ON s.partition_date = p.partition_date AND s.product_id = p.product_id
    LEFT JOIN catalog c ON c.partition_date = p.partition_date AND c.product_id = p.product_id
)
SELECT partition_date, product_id, product_name, category,
       CAST(total_views AS BIGINT) AS total_views,
       CAST(cart_adds AS BIGINT) AS cart_adds,
       CAST(cart_removes AS BIGINT) AS cart_removes,
       CAST(total_purchases AS BIGINT) AS total_purchases,
       CAST(units_sold AS BIGINT) AS units_sold,
       CAST(revenue AS DECIMAL(18, 2)) AS revenue,
       CAST(CASE WHEN total_views = 0 THEN 0
                 ELSE ROUND(CAST(total_purchases AS DOUBLE) / total_views, 6) END
            AS DECIMAL(12, 6)) AS conversion_rate,
       CAST(ROUND(CAST(total_purchases + 1 AS DOUBLE) / (total_views + 10)
                  * LN(1 + CAST(revenue AS DOUBLE)), 6) AS DECIMAL(18, 6))
           AS recommendation_score,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM measured
