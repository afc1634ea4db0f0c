"""Production mode: the studies, the registry and Dagster's storage on a real PostgreSQL."""
