"""Market-data sources: each returns OHLCV bars in the schema of ``ffe_dagster.core.data.bars``."""
