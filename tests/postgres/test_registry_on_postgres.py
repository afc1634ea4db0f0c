"""The parameter registry on PostgreSQL: the same scenarios as on SQLite (tests/test_registry.py),
and the registry's tables next to Optuna's in one database, as production mode configures it."""

from datetime import timedelta

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.config.settings import Settings
from ffe_dagster.core.promotion.checks import GateCheck
from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Action, VersionStatus
from ffe_dagster.core.study.optimize import DIRECTIONS
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.resources.registry import ParameterRegistryResource
from tests.test_registry import CHECKS, MARKS, T0, _candidate, _record


def test_versions_transitions_and_rollback(postgres_url: str) -> None:
    registry = ParameterRegistryResource(url=postgres_url)
    assert registry.current("BULL") is None
    assert _record(registry, 1.0, True) == 1
    assert _record(registry, 2.0, False) == 2  # rejected: the current version stays
    assert _record(registry, 3.0, True) == 3
    current = registry.current("BULL")
    assert current is not None and current.params == {"x": 3.0}
    assert registry.rollback("BULL", reason="breach", trigger="manual", run_id="r2") == 1
    current = registry.current("BULL")
    assert current is not None and current.version == 1
    assert current.created_at.tzinfo is not None  # timestamptz round-trips aware datetimes
    assert [v.status for v in registry.history("BULL")] == [
        "current",
        VersionStatus.REJECTED,
        VersionStatus.ROLLED_BACK,
    ]
    actions = [(t.action, t.from_version, t.to_version) for t in registry.transitions()]
    assert actions == [
        (Action.PROMOTE, None, 1),
        (Action.REJECT, 1, 1),
        (Action.PROMOTE, 1, 3),
        (Action.ROLLBACK, 3, 1),
    ]
    with pytest.raises(ValueError, match="no earlier promoted version"):
        registry.rollback("BULL", reason="again", trigger="manual", run_id=None)


def test_a_candidate_climbs_to_full_with_its_audit_trail(postgres_url: str) -> None:
    registry = ParameterRegistryResource(url=postgres_url)
    assert _candidate(registry, 1.0) == 1
    (flying,) = registry.in_flight("BEAR")
    assert flying.data_marks == MARKS and flying.stage_entered_at == T0
    common = {"regime": "BEAR", "version": 1, "checks": CHECKS, "trigger": "schedule"}
    registry.advance(
        to_stage=Stage.LIMITED,
        reason="WARM passed",
        metrics={"sharpe": 1.3},
        run_id="run-3",
        at=T0 + timedelta(hours=12),
        **common,
    )
    registry.advance(
        to_stage=Stage.FULL,
        reason="LIMITED passed",
        metrics={"sharpe": 1.4},
        run_id="run-4",
        at=T0 + timedelta(hours=40),
        **common,
    )
    current = registry.current("BEAR")
    assert current is not None and (current.stage, current.stage_run_id) == (Stage.FULL, "run-4")
    trail = [(t.action, t.from_stage, t.to_stage) for t in registry.transitions("BEAR")]
    assert trail == [
        (Action.ADVANCE, Stage.COLD, Stage.WARM),
        (Action.ADVANCE, Stage.WARM, Stage.LIMITED),
        (Action.PROMOTE, Stage.LIMITED, Stage.FULL),
    ]
    last = registry.transitions("BEAR")[-1]
    assert last.checks == (GateCheck("sharpe", 1.2, 0.5, True, "ok"),)
    assert last.at == T0 + timedelta(hours=40)


def test_registry_and_studies_share_one_database(studies_url: str, postgres_url: str) -> None:
    # Production mode sets only FFE_STUDIES_URL; the registry follows it into the same database
    # (for the journal in PostgreSQL, the database under the journal).
    settings = Settings.from_env({"FFE_STUDIES_URL": studies_url})
    assert settings.registry_url == settings.studies_url == studies_url
    study = optuna.create_study(
        study_name="shared",
        storage=open_storage(settings.studies_url, stream="shared"),
        directions=DIRECTIONS,
    )
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.0, 0.0), n_trials=2)
    registry = ParameterRegistryResource(url=settings.registry_url)
    _record(registry, 1.0, True)

    journal = studies_url.startswith(DATABASE_JOURNAL_PREFIX)
    engine = sa.create_engine(postgres_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as con:
            # A told trial is one COMPLETE state log in the journal, one row in RDB's trials.
            told = (
                "SELECT count(*) FROM ffe_optuna_journal WHERE log LIKE :complete"
                if journal
                else "SELECT count(*) FROM trials"
            )
            complete = f'%"state":{int(TrialState.COMPLETE)},%'
            n_trials = con.execute(sa.text(told), {"complete": complete}).scalar_one()
            n_versions = con.execute(
                sa.text("SELECT count(*) FROM parameter_versions")
            ).scalar_one()
    finally:
        engine.dispose()
    studies_tables = {"ffe_optuna_journal"} if journal else {"studies", "trials"}
    assert studies_tables | {"parameter_versions", "parameter_transitions"} <= tables
    assert (n_trials, n_versions) == (2, 1)
    assert len(registry.history()) == 1  # read back through the same URL
