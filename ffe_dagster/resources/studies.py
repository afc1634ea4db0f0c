"""Where Optuna keeps its studies: a journal file by default, PostgreSQL in production."""

from dagster import ConfigurableResource
from optuna.storages import BaseStorage

from ffe_dagster.core.optimize import open_storage


class OptunaStorageResource(ConfigurableResource):
    """An Optuna storage URL (``journal:///path`` or SQLAlchemy); a study re-created with the same
    name resumes from it."""

    url: str

    def storage(self) -> str | BaseStorage:
        """The storage, with its folder created when it is a local file."""
        return open_storage(self.url)
