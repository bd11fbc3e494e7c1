"""The data-use policy and what enforces it: one versioned document (policy.yaml), its loader,
the pure decision engine, the request gate (``access``), the store of versions with their notice
periods, the tamper-evident audit chain (``audit``), retention, transparency reports, and the
privacy service the backend runs (grants, retention, audit of database-level events)."""
