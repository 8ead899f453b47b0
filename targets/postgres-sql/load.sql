-- The e-commerce data every run starts from (read-only: build.sh loads it once per hash of
-- this file, postgresql.conf and the scale, into a cached data-directory snapshot).
-- Deterministic: generate_series and hashint4 only. :scale is psql's variable: 1 is the
-- seed's demo (100K customers, 10K products, 2M orders, 5M order items); build.sh's default
-- is 0.5 (about 40 s here), the tests' 0.01.
\set customers (100000 * :scale)::int
\set products (10000 * :scale)::int
\set orders (2000000 * :scale)::int
\set items (5000000 * :scale)::int
CREATE EXTENSION pg_stat_statements;
CREATE TABLE customers (
  id int PRIMARY KEY, name text NOT NULL, email text NOT NULL, region int NOT NULL,
  created date NOT NULL);
CREATE TABLE products (
  id int PRIMARY KEY, name text NOT NULL, category int NOT NULL, price numeric(10, 2) NOT NULL);
CREATE TABLE orders (
  id int PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL, created date NOT NULL);
CREATE TABLE order_items (
  order_id int NOT NULL, line int NOT NULL, product_id int NOT NULL, qty int NOT NULL,
  price numeric(10, 2) NOT NULL);
INSERT INTO customers
  SELECT i, 'customer ' || i, 'User' || i || '@Example.com', hashint4(i) & 15,
         date '2020-01-01' + (hashint4(i * 3) & 2047)
  FROM generate_series(1, :customers) i;
INSERT INTO products
  SELECT i, 'product ' || i, (hashint4(i) & 2147483647) % 50,
         ((hashint4(i * 5) & 65535) / 100.0 + 1)::numeric(10, 2)
  FROM generate_series(1, :products) i;
INSERT INTO orders
  SELECT i, 1 + (hashint4(i) & 2147483647) % :customers,
         (ARRAY['new', 'paid', 'shipped', 'delivered', 'returned'])[1 + (hashint4(i * 7) & 2147483647) % 5],
         date '2023-01-01' + (i::bigint * 1400 / :orders)::int
  FROM generate_series(1, :orders) i;
INSERT INTO order_items
  SELECT 1 + (i - 1) % :orders, 1 + (i - 1) / :orders,
         1 + (hashint4(i * 11) & 2147483647) % :products, 1 + (hashint4(i * 13) & 7),
         ((hashint4(i * 17) & 65535) / 100.0 + 1)::numeric(10, 2)
  FROM generate_series(1, :items) i;
VACUUM ANALYZE;
