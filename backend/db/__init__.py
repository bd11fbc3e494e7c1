"""PostgreSQL: the engine and time-series storage (``engine``), the schema (``schema``) and the
Alembic migrations (``migrations``)."""
