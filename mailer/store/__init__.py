"""The database: tables, engine, the delivery ledger (also the work queue), planning an audience,
imports, suppressions, the run lock and the shared send rate. SQLite or PostgreSQL."""
