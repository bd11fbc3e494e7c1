"""The data-use policy: one versioned document (policy.yaml), its loader, the pure decision
engine, the store of versions with their notice periods, and the privacy service the backend
runs (grants, retention, audit of database-level events)."""
