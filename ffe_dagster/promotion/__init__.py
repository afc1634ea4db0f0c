"""Promotion across cycles: the state machine over the registry, and what follows a change."""
