-- silver.dim_products for the products in touched_products(product_id).
-- Input: product_updates (silver). The latest update (by event time) gives the current
-- name, category, price, currency and inventory.
WITH ranked AS (
    SELECT u.*,
           row_number() OVER (PARTITION BY u.product_id
                              ORDER BY u.event_ts DESC, u.event_id DESC) AS rn,
           MIN(u.event_ts) OVER (PARTITION BY u.product_id) AS first_seen_ts
    FROM product_updates u
    WHERE u.product_id IN (SELECT product_id FROM touched_products)
)
SELECT product_id, name, category, price, currency, inventory,
       update_type AS last_update_type,
       first_seen_ts,
       event_ts AS last_updated_ts,
       CAST($now AS TIMESTAMP WITH TIME ZONE) AS updated_ts
FROM ranked
WHERE rn = 1
