"""Shared fixtures: settings that keep every store under a temporary folder."""

import gc
from pathlib import Path

import pytest
import yaml

from ffe_dagster.config.settings import PACKAGE_DIR, Settings


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Settings for a full cycle in ``tmp_path`` with 4-6 trials per level."""
    raw = yaml.safe_load((PACKAGE_DIR / "config" / "curriculum.yaml").read_text())
    for level in raw["levels"]:
        level["trials"]["quick"] = 4 + level["level"] // 2
    curriculum = tmp_path / "curriculum.yaml"
    curriculum.write_text(yaml.safe_dump(raw))
    return Settings.from_env(
        {
            "FFE_VAR_DIR": str(tmp_path / "var"),
            "FFE_CURRICULUM": str(curriculum),
            "FFE_TRIAL_PROFILE": "quick",
        }
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything imported by collection (Dagster, MLflow, ccxt, polars: about 400,000
    objects) out of the garbage collector's reach.

    A full collection of that heap takes 0.4-0.5 s on a loaded 2-core machine, and it holds
    the GIL: a fake venue's thread stalled by one misses a client's 0.3 s read timeout, so a
    test counting retries saw a retry the venue never caused. Frozen objects are never
    scanned; nearly all are modules, classes and functions that live to the end of the
    session anyway.
    """
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand the frozen objects back, so the interpreter's shutdown frees them (DuckDB's
    bindings report every object still alive at exit as a leak)."""
    gc.unfreeze()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups from the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests sharing a module-scoped fixture on one pytest-xdist worker.

    ``make test`` runs ``pytest -n ... --dist loadgroup``: an ungrouped test goes to whichever
    worker is free, so a module's expensive set-up (a venue with stored days, an MLflow server,
    the Celery cluster) would be built again on every worker that draws one of its tests. A
    test using such a fixture joins its module's group (per venue for the fault runs, whose
    module fixture is parametrized), so each set-up is built once, as in a serial run.

    The modules holding a ``slow`` test (the PostgreSQL cycle alone takes minutes) are moved to
    the front, whole so their module fixtures are still built once: a worker that draws the
    longest test last finishes minutes after the other one.
    """
    slow_modules = {
        item.nodeid.split("::", 1)[0] for item in items if item.get_closest_marker("slow")
    }
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in slow_modules)  # stable
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # pytest's per-test fixture closure
        if info is None:
            continue
        shared = [
            name
            for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope == "module"
        ]
        if not shared:
            continue
        group = item.nodeid.split("::", 1)[0]
        callspec = getattr(item, "callspec", None)
        params = sorted(
            f"{name}={callspec.params[name]}"
            for name in shared
            if callspec is not None and name in callspec.params
        )
        if params:
            group += "[" + ",".join(params) + "]"
        item.add_marker(pytest.mark.xdist_group(group))
