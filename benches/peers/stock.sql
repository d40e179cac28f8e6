-- pgbench: one order line against a row-locked stock level, on a random SKU.
\set sku random(1, :skus)
UPDATE stock SET qty = qty - 1 WHERE sku = :sku AND qty > 0;
