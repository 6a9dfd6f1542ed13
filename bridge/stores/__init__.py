"""Job stores: SQLite (embedded) now, Redis with the Redis backend; one protocol (`base`)."""
