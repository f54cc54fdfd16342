-- gold.category_performance for the days in touched_days(partition_date).
-- Inputs: order_payments, order_items (silver), rates. Paid orders only, by the day they
-- were placed: orders containing the category, units and revenue of its lines (each line
-- converted to the reporting currency and rounded to the cent).
WITH paid AS (
    SELECT order_id, order_event_id, local_date(order_ts) AS partition_date
    FROM order_payments
    WHERE fully_paid AND local_date(order_ts) IN (SELECT partition_date FROM touched_days)
)
SELECT p.partition_date,
       i.category,
       CAST(COUNT(DISTINCT p.order_id) AS BIGINT) AS orders,
       CAST(SUM(i.quantity) AS BIGINT) AS units_sold,
       CAST(COALESCE(SUM(ROUND(i.line_amount * r.to_reporting, 2)), 0) AS DECIMAL(18, 2))
           AS revenue,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM paid p
JOIN order_items i ON i.event_id = p.order_event_id
JOIN rates r ON r.currency = i.currency
GROUP BY p.partition_date, i.category
