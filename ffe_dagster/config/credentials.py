"""Secrets a universe needs: checked at load so a missing one fails early with a clear message.

Secrets come only from the environment, never from the YAML files. Only a source some
instrument reads from asks for its secret: a file-only universe needs none. OANDA needs an
access token (``OANDA_API_TOKEN``); the ccxt source reads public candles and needs no key.
"""

import os
from collections.abc import Mapping

from ffe_dagster.config.errors import ConfigError
from ffe_dagster.config.universe import OandaSourceSpec, Universe

OANDA_TOKEN_ENV = "OANDA_API_TOKEN"


def missing_credentials(universe: Universe, env: Mapping[str, str]) -> list[str]:
    """One problem per secret some instrument of ``universe`` needs and ``env`` lacks (or holds
    empty), naming the variable, the source and the instruments. Values are never shown."""
    problems: list[str] = []
    for name, spec in sorted(universe.sources.items()):
        if not isinstance(spec, OandaSourceSpec):
            continue
        users = [i.key for i in universe.instruments if i.source == name]
        if users and not env.get(OANDA_TOKEN_ENV, "").strip():
            problems.append(
                f"{OANDA_TOKEN_ENV} is not set (or empty), but instruments {', '.join(users)} "
                f"read from the OANDA source {name!r}: set it to an access token of OANDA's "
                f"{spec.environment!r} environment"
            )
    return problems


def require_credentials(universe: Universe, env: Mapping[str, str] | None = None) -> None:
    """Raise a ``ConfigError`` when a source in use lacks its secret in ``env`` (default
    ``os.environ``); pass silently when no instrument reads from such a source."""
    problems = missing_credentials(universe, os.environ if env is None else env)
    if problems:
        raise ConfigError("environment", problems)
