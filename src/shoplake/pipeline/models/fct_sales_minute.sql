-- gold.fct_sales_minute for the minutes in touched_minutes(minute_bucket).
-- Inputs: order_payments (silver), rates(currency, to_reporting), touched_minutes.
-- Paid orders by the minute of order_ts; each order's total is converted to the reporting
-- currency and rounded to the cent, then summed. A touched minute with no paid order
-- comes out with paid_orders = 0 (the runner deletes it from the table).
SELECT m.minute_bucket,
       CAST(COALESCE(SUM(ROUND(op.total_amount * r.to_reporting, 2)), 0) AS DECIMAL(18, 2)) AS gmv,
       COUNT(op.order_id) AS paid_orders,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS processed_ts
FROM touched_minutes m
LEFT JOIN order_payments op
       ON date_trunc('minute', op.order_ts) = m.minute_bucket AND op.fully_paid
LEFT JOIN rates r ON r.currency = op.currency
GROUP BY m.minute_bucket
