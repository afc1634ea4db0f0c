"""Dagster resources: thin, configurable wrappers over storage and services."""
