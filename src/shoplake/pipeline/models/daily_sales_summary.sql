-- gold.daily_sales_summary for the days in touched_days(partition_date).
-- Inputs: order_payments, page_views (silver), rates(currency, to_reporting).
-- local_date(ts) is the day of a timestamp in the reporting time zone.
-- Amounts: each order's total converted to the reporting currency, rounded to the cent.
WITH orders AS (
    SELECT local_date(op.order_ts) AS partition_date,
           op.user_id,
           op.fully_paid,
           ROUND(op.total_amount * r.to_reporting, 2) AS amount
    FROM order_payments op
    JOIN rates r ON r.currency = op.currency
    WHERE local_date(op.order_ts) IN (SELECT partition_date FROM touched_days)
),
sales AS (
    SELECT partition_date,
           COUNT(*) AS orders_placed,
           SUM(amount) AS gross_revenue,
           SUM(CASE WHEN fully_paid THEN 1 ELSE 0 END) AS paid_orders,
           SUM(CASE WHEN fully_paid THEN amount ELSE 0 END) AS total_revenue,
           COUNT(DISTINCT user_id) AS purchasers
    FROM orders
    GROUP BY partition_date
),
visits AS (
    SELECT local_date(event_ts) AS partition_date, COUNT(DISTINCT user_id) AS visitors
    FROM page_views
    WHERE local_date(event_ts) IN (SELECT partition_date FROM touched_days)
    GROUP BY local_date(event_ts)
),
days AS (
    SELECT d.partition_date,
           COALESCE(s.orders_placed, 0) AS orders_placed,
           COALESCE(s.gross_revenue, 0) AS gross_revenue,
           COALESCE(s.paid_orders, 0) AS paid_orders,
           COALESCE(s.total_revenue, 0) AS total_revenue,
           COALESCE(v.visitors, 0) AS visitors,
           COALESCE(s.purchasers, 0) AS purchasers
    FROM touched_days d
    LEFT JOIN sales s ON s.partition_date = d.partition_date
    LEFT JOIN visits v ON v.partition_date = d.partition_date
    WHERE s.partition_date IS NOT NULL OR v.partition_date IS NOT NULL
)
SELECT partition_date,
       CAST(orders_placed AS BIGINT) AS orders_placed,
       CAST(gross_revenue AS DECIMAL(18, 2)) AS gross_revenue,
       CAST(paid_orders AS BIGINT) AS paid_orders,
       CAST(total_revenue AS DECIMAL(18, 2)) AS total_revenue,
       CAST(visitors AS BIGINT) AS visitors,
       CAST(purchasers AS BIGINT) AS purchasers,
       CAST(CASE WHEN visitors = 0 THEN 0
                 ELSE ROUND(CAST(purchasers AS DOUBLE) / visitors, 6) END AS DECIMAL(9, 6))
           AS conversion_rate,
       CAST(CASE WHEN paid_orders = 0 THEN 0
                 ELSE ROUND(CAST(total_revenue AS DOUBLE) / paid_orders, 2) END AS DECIMAL(18, 2))
           AS avg_order_value,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM days
