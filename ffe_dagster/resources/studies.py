"""Where Optuna keeps its studies: a journal file by default, PostgreSQL in production."""

from dagster import ConfigurableResource
from optuna.storages import BaseStorage

from ffe_dagster.core.optimize import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, open_storage


class OptunaStorageResource(ConfigurableResource):
    """An Optuna storage URL (``journal:///path`` or SQLAlchemy); a study re-created with the same
    name resumes from it. On SQL storages a worker beats every ``heartbeat_interval_s`` seconds
    and a trial silent for ``grace_period_s`` is failed and retried (``open_storage``)."""

    url: str
    heartbeat_interval_s: int = HEARTBEAT_INTERVAL_S
    grace_period_s: int = GRACE_PERIOD_S

    def storage(self) -> str | BaseStorage:
        """The storage, with its folder created when it is a local file."""
        return open_storage(
            self.url,
            heartbeat_interval=self.heartbeat_interval_s,
            grace_period=self.grace_period_s,
        )
