-- The application's views (applied at every start, before the service listens).
CREATE VIEW order_values AS
  SELECT i.order_id, sum(i.qty * i.price) AS value FROM order_items i GROUP BY i.order_id;
