-- Login: the customer of an email address, whatever its case.
SELECT id, name, region
FROM customers
WHERE lower(email) = 'user31337@example.com';
