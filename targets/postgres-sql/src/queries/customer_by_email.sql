-- Login: the customer of an email address, whatever its case.
SELECT id, name, region
FROM customers
WHERE lower(email) = 'user777@example.com';
