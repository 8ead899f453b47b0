-- The lines and value of one day's delivered orders.
SELECT o.id, count(*) AS lines, sum(i.qty * i.price) AS value
FROM orders o
JOIN order_items i ON i.order_id = o.id
WHERE o.created = date '2025-06-01' AND o.status = 'delivered'
GROUP BY o.id
ORDER BY o.id;
