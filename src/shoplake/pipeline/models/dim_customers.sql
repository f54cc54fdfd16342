-- silver.dim_customers for the customers in touched_users(user_id).
-- Inputs: seen(user_id, event_ts, event_id, country, device) — every page view, cart event,
-- order and login of theirs — and orders (silver). Country and device: of the latest event
-- that carries each.
WITH mine AS (
    SELECT * FROM seen WHERE user_id IN (SELECT user_id FROM touched_users)
),
spans AS (
    SELECT user_id, MIN(event_ts) AS first_seen_ts, MAX(event_ts) AS last_seen_ts
    FROM mine
    GROUP BY user_id
),
country AS (
    SELECT user_id, country FROM (
        SELECT user_id, country,
               row_number() OVER (PARTITION BY user_id ORDER BY event_ts DESC, event_id DESC) AS rn
        FROM mine WHERE country IS NOT NULL
    ) ranked WHERE rn = 1
),
device AS (
    SELECT user_id, device FROM (
        SELECT user_id, device,
               row_number() OVER (PARTITION BY user_id ORDER BY event_ts DESC, event_id DESC) AS rn
        FROM mine WHERE device IS NOT NULL
    ) ranked WHERE rn = 1
),
placed AS (
    SELECT user_id, COUNT(DISTINCT order_id) AS orders_placed,
           MIN(event_ts) AS first_order_ts, MAX(event_ts) AS last_order_ts
    FROM orders
    WHERE user_id IN (SELECT user_id FROM touched_users)
    GROUP BY user_id
)
SELECT s.user_id, c.country, d.device, s.first_seen_ts, s.last_seen_ts,
       CAST(COALESCE(p.orders_placed, 0) AS BIGINT) AS orders_placed,
       p.first_order_ts, p.last_order_ts,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS updated_ts
FROM spans s
LEFT JOIN country c ON c.user_id = s.user_id
LEFT JOIN device d ON d.user_id = s.user_id
LEFT JOIN placed p ON p.user_id = s.user_id
