"""What launched a run, read from its tags: the one rule every part of the project uses."""

from collections.abc import Mapping

TRIGGER_TAG = "ffe/trigger"
CYCLE_TAG = "ffe/cycle"
TRIGGERS = ("schedule", "sensor", "manual")


def run_trigger(tags: Mapping[str, str]) -> str:
    """What launched the run, from its tags: ``schedule``, ``sensor`` or ``manual``.

    Dagster tags runs of a schedule with ``dagster/schedule_name`` and runs of a sensor with
    ``dagster/sensor_name``; runs started otherwise carry the project's ``ffe/trigger`` tag
    (``make run`` and the UI launch: ``manual``).
    """
    if "dagster/schedule_name" in tags:
        return "schedule"
    # The cycle chain sensor launches later steps of a scheduled cycle and carries the cycle's
    # trigger in ``ffe/trigger``: that wins over its own sensor tag.
    if "dagster/sensor_name" in tags and TRIGGER_TAG not in tags:
        return "sensor"
    trigger = tags.get(TRIGGER_TAG, "manual")
    if trigger not in TRIGGERS:
        raise ValueError(f"tag {TRIGGER_TAG} must be one of {TRIGGERS}, got {trigger!r}")
    return trigger


def run_cycle_id(tags: Mapping[str, str], run_id: str) -> str:
    """The cycle a run belongs to: its ``ffe/cycle`` tag (the cycle chain carries the first
    run's id to every later step), else the run's own id (it starts a cycle)."""
    return tags.get(CYCLE_TAG, run_id)
