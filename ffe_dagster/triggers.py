"""What launched a run, read from its tags: the one rule every part of the project uses."""

from collections.abc import Mapping

from ffe_dagster.core.promotion.records import Trigger

TRIGGER_TAG = "ffe/trigger"
CYCLE_TAG = "ffe/cycle"
# What can launch a run; an automatic rollback is a decision inside a run, not a launch.
TRIGGERS = (Trigger.SCHEDULE.value, Trigger.SENSOR.value, Trigger.MANUAL.value)


def run_trigger(tags: Mapping[str, str]) -> Trigger:
    """What launched the run, from its tags: ``schedule``, ``sensor`` or ``manual``.

    Dagster tags runs of a schedule with ``dagster/schedule_name`` and runs of a sensor with
    ``dagster/sensor_name``; runs started otherwise carry the project's ``ffe/trigger`` tag
    (``make run`` and the UI launch: ``manual``).
    """
    if "dagster/schedule_name" in tags:
        return Trigger.SCHEDULE
    # The cycle chain sensor launches later steps of a scheduled cycle and carries the cycle's
    # trigger in ``ffe/trigger``: that wins over its own sensor tag.
    if "dagster/sensor_name" in tags and TRIGGER_TAG not in tags:
        return Trigger.SENSOR
    trigger = tags.get(TRIGGER_TAG, Trigger.MANUAL.value)
    if trigger not in TRIGGERS:
        raise ValueError(f"tag {TRIGGER_TAG} must be one of {TRIGGERS}, got {trigger!r}")
    return Trigger(trigger)


def run_cycle_id(tags: Mapping[str, str], run_id: str) -> str:
    """The cycle a run belongs to: its ``ffe/cycle`` tag (the cycle chain carries the first
    run's id to every later step), else the run's own id (it starts a cycle)."""
    return tags.get(CYCLE_TAG, run_id)
