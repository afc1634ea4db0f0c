"""Opening Optuna storages from their URLs (``resources/optuna_storage.py``): the journal's folder
is created, SQL URLs get heartbeats and a clear error when the database does not answer, and a
bare path is refused."""

from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage

from ffe_dagster.core.study.optimize import StorageUnavailableError
from ffe_dagster.resources.optuna_storage import HEARTBEAT_INTERVAL_S, open_storage


def test_open_storage_journal_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "s.journal"
    storage = open_storage("journal:///" + str(path))
    assert isinstance(storage, JournalStorage)
    assert path.parent.is_dir()
    optuna.create_study(study_name="j", storage=storage)
    assert path.is_file()


def test_open_storage_opens_sql_urls_with_heartbeats(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'studies.db'}"
    storage = open_storage(url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (storage.url, storage.get_heartbeat_interval()) == (url, HEARTBEAT_INTERVAL_S)
    assert (tmp_path / "sub").is_dir()
    # An SQL URL is opened at once: a database that does not answer fails with a clear error.
    pg = "postgresql+psycopg2://user:s3cret-pw@127.0.0.1:1/optuna"
    with pytest.raises(StorageUnavailableError, match=r"'optuna' on 127\.0\.0\.1:1 ") as caught:
        open_storage(pg)
    assert "s3cret-pw" not in str(caught.value)


def test_open_storage_rejects_a_bare_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an Optuna storage URL"):
        open_storage(str(tmp_path / "studies.db"))
