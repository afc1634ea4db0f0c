"""Markdown helpers of the cycle report: number formatting, table cells and phrase lists."""

from collections.abc import Sequence
from typing import Any


def format_value(value: float, unit: str) -> str:
    return f"{value:.1f}%" if unit == "%" else f"{value:.2f}"


def format_optional(value: float | None, unit: str) -> str:
    return "n/a" if value is None else format_value(float(value), unit)


def format_param(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{float(value):.3g}"


def escape_cell(text: str) -> str:
    # A pipe would end the Markdown cell early.
    return text.replace("|", "\\|").replace("\n", " ")


def join_phrases(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
