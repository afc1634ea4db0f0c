"""``ConfigError``: every problem found in one configuration source, reported at once.

A problem is one line that names the key (``levels[2].trials.quick``) or the environment variable
and what was expected; the error prefixes them with the source (the file, or ``environment``).
Messages never hold a secret: URLs are shown without their password, webhook URLs as
``scheme://host`` only.
"""

from collections.abc import Sequence


class ConfigError(ValueError):
    """The configuration (a YAML file or the environment) is invalid; ``problems`` lists why."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = f"{source}: {self.problems[0]}"
        else:
            lines = "".join(f"\n  - {p}" for p in self.problems)
            message = f"{source}: {len(self.problems)} configuration problems:{lines}"
        super().__init__(message)


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Problems:
    """Collects the problems of one source; ``raise_if_any`` raises them as one ``ConfigError``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        """Record one problem (``key must ..., got ...``)."""
        self.items.append(message)

    def number(self, key: str, value: object) -> bool:
        """Whether ``value`` is a number; records a problem when it is not."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True
        self.add(f"{key} must be a number, got {value!r}")
        return False

    def at_least(self, key: str, value: float, low: float, *, strict: bool = False) -> None:
        """``value >= low`` (``> low`` when ``strict``)."""
        if not self.number(key, value):
            return
        if value < low or (strict and value == low):
            op = ">" if strict else ">="
            self.add(f"{key} must be {op} {_num(low)}, got {_num(value)}")

    def within(
        self,
        key: str,
        value: float,
        low: float,
        high: float,
        *,
        open_low: bool = False,
        open_high: bool = False,
    ) -> None:
        """``value`` in the interval from ``low`` to ``high`` (ends open when asked)."""
        if not self.number(key, value):
            return
        too_low = value < low or (open_low and value == low)
        too_high = value > high or (open_high and value == high)
        if too_low or too_high:
            left, right = "(" if open_low else "[", ")" if open_high else "]"
            self.add(f"{key} must be in {left}{_num(low)}, {_num(high)}{right}, got {_num(value)}")

    def one_of(self, key: str, value: object, allowed: Sequence[object]) -> None:
        """``value`` is one of ``allowed``."""
        if value not in allowed:
            self.add(f"{key} must be one of {list(allowed)}, got {value!r}")

    def raise_if_any(self, source: str) -> None:
        """Raise every recorded problem as one ``ConfigError`` naming ``source``."""
        if self.items:
            raise ConfigError(source, self.items)
