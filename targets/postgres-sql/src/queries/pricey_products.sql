-- Products priced above their category's average, in the first five categories.
SELECT p.id, p.name, p.category, p.price
FROM products p
WHERE p.category < 5
  AND p.price > (SELECT avg(q.price) FROM products q WHERE q.category = p.category)
ORDER BY p.category, p.price DESC, p.id;
