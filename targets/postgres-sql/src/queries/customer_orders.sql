-- A customer's order history page: their 20 latest orders.
SELECT o.id, o.created, o.status
FROM orders o
WHERE o.customer_id = 420
ORDER BY o.created DESC, o.id DESC
LIMIT 20;
