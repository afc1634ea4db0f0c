"""The market-data resource: which source the ingestion asset reads bars from."""

from pathlib import Path

from dagster import ConfigurableResource

from ffe_dagster.sources.files import FileSource


class MarketDataResource(ConfigurableResource):
    """Bars from local files (the bundled real samples by default)."""

    directory: str
    files: dict[str, str]

    def source(self) -> FileSource:
        """The file source over the configured folder."""
        return FileSource(directory=Path(self.directory), files=self.files)
