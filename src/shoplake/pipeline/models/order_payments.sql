-- silver.order_payments for the orders in touched_orders(order_id).
-- Inputs: orders, payments (silver), touched_orders. Parameter: $now.
-- paid_amount = captured − refunded, in the order's currency; an order is fully paid
-- when paid_amount >= total_amount − 0.01. If an order_id was placed twice, the first wins.
WITH first_orders AS (
    SELECT order_id, user_id, session_id, event_id, total_amount, currency, event_ts
    FROM (
        SELECT o.*, row_number() OVER (PARTITION BY o.order_id
                                       ORDER BY o.event_ts, o.event_id) AS rn
        FROM orders o
        WHERE o.order_id IN (SELECT order_id FROM touched_orders)
    ) ranked
    WHERE rn = 1
),
paid AS (
    SELECT p.order_id,
           SUM(CASE WHEN p.status = 'captured' THEN p.amount
                    WHEN p.status = 'refunded' THEN -p.amount
                    ELSE CAST(0 AS DECIMAL(18, 2)) END) AS paid_amount,
           MAX(p.event_ts) AS last_payment_ts
    FROM payments p
    WHERE p.order_id IN (SELECT order_id FROM touched_orders)
    GROUP BY p.order_id
)
SELECT o.order_id,
       o.user_id,
       o.session_id,
       o.event_id AS order_event_id,
       o.total_amount,
       CAST(COALESCE(paid.paid_amount, 0) AS DECIMAL(18, 2)) AS paid_amount,
       o.currency,
       COALESCE(paid.paid_amount, 0) >= o.total_amount - 0.01 AS fully_paid,
       o.event_ts AS order_ts,
       paid.last_payment_ts,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS updated_ts
FROM first_orders o
LEFT JOIN paid ON paid.order_id = o.order_id
