-- pgbench: one order line against a row-locked stock level, all on one hot SKU.
UPDATE stock SET qty = qty - 1 WHERE sku = 1 AND qty > 0;
