-- Each of the customers of region 3 among the first 200 with the date of their latest order.
SELECT c.id, c.name,
       (SELECT max(o.created) FROM orders o WHERE o.customer_id = c.id) AS last_order
FROM customers c
WHERE c.region = 3 AND c.id <= 200
ORDER BY c.id;
