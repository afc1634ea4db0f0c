"""Where Optuna keeps its studies (SQLite by default, PostgreSQL in production)."""

from pathlib import Path

from dagster import ConfigurableResource


class OptunaStorageResource(ConfigurableResource):
    """An Optuna storage URL; a study re-created with the same name resumes from it."""

    url: str

    def storage_url(self) -> str:
        """The URL, with the folder of a SQLite file created when missing."""
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return self.url
