"""The curriculum: one asset per level, all made by ``build_level_asset`` from curriculum.yaml."""

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ffe_dagster.assets.level_retest import log_retested_level
from ffe_dagster.assets.level_run import LevelRun, level_run_fields
from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import Universe
from ffe_dagster.core.backtest.metrics import spell_non_finite
from ffe_dagster.core.reporting.plots import StudyPlotData
from ffe_dagster.core.study.convergence import best_feasible_so_far, trials_per_second
from ffe_dagster.core.study.datasets import StudyDataset, study_datasets
from ffe_dagster.core.study.identity import (
    bytes_fingerprint,
    level_data_fingerprint,
    segments_fingerprint,
    study_identity,
)
from ffe_dagster.core.study.level_records import outcome_result, trials_table
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_reuse import retestable, reusable, reuse_key, study_key
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec
from ffe_dagster.core.study.levels import (
    LevelData,
    level_evaluator,
    level_segments,
    level_study_config,
    level_test_evaluator,
    retest_level,
    run_level,
    skipped_level_result,
)
from ffe_dagster.core.study.optimize import TrialRecord, complete_trial_count
from ffe_dagster.core.study.progression import Decision
from ffe_dagster.resources.provenance import code_version, git_commit
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import DatasetSource, cycle_ref
from ffe_dagster.resources.tracking_reuse import log_reused_study
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.files import curriculum_signals
from ffe_dagster.terminal import TrialProgress


def study_fingerprint(spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData) -> str:
    """The study's identity (``core.study.identity``): a hash of every input that changes a
    trial's numbers (the bars of the level's train/validation segments, not the test era or the
    hold-out), the signal file by the hash of its bytes.

    The same inputs give the same study name, so a crashed run, or a cycle whose new bars only
    reach the test era and the hold-out, resumes its study from storage; any change starts a new
    study.
    """
    signal = None
    if curriculum.signal_file:
        path = Path(curriculum.signal_file)
        if not path.exists():
            raise FileNotFoundError(f"signal file not found: {path}")
        signal = bytes_fingerprint(path.read_bytes())
    return study_identity(
        spec,
        curriculum,
        segments=segments_fingerprint(level_segments(spec, curriculum, data)),
        signal_file_sha256=signal,
    )


def _criteria_markdown(result: LevelResult) -> str:
    lines = ["| criterion | threshold | test value | passed |", "|---|---|---|---|"]
    for c in result.criteria:
        lines.append(f"| {c.name} | {c.threshold:g} | {c.value:.3f} | {c.passed} |")
    return "\n".join(lines)


def _datasets(
    spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData
) -> tuple[StudyDataset, ...]:
    # The segments and split of the evaluator the study ran on (the one place that builds it).
    evaluator = level_evaluator(spec, curriculum, data)
    test_segments = None
    if curriculum.test_era_start:
        # With eras the level is tested on its test-era segments, not on a tail of each segment.
        tester = level_test_evaluator(spec, curriculum, data)
        test_segments = () if tester is None else tester.segments
    return study_datasets(
        evaluator.segments,
        train_fraction=evaluator.train_fraction,
        validation_fraction=evaluator.validation_fraction,
        test_segments=test_segments,
    )


def _logged_in_full(tracking: MlflowTrackingResource, result: LevelResult) -> bool:
    # A stored result is reused (or its study side kept) only with its MLflow runs FINISHED: a
    # run whose logging failed (in the tracking worker, after the level's id was stored) would
    # otherwise be the source of every later cycle's reference run. A run the store does not
    # hold is left to the reuse itself, which names it.
    runs = [
        r for r in (result.reused_from_run, result.study_side_from_run, result.mlflow_run_id) if r
    ]
    statuses = tracking.run_statuses(runs) if runs else {}
    return all(status == "FINISHED" for status in statuses.values())


def _level_metadata(result: LevelResult) -> dict[str, Any]:
    # The level's materialization metadata, from its stored result (a reused one too).
    row = result.to_json()
    chosen = result.chosen
    return {
        "passed": result.passed,
        "reused": result.reused,
        "study_name": result.study_name,
        "trials": result.n_trials,
        "new_trials": result.new_trials,
        "feasible_trials": result.feasible_trials,
        "chosen_params": MetadataValue.json(dict(chosen.params) if chosen else {}),
        "validation": MetadataValue.json(
            spell_non_finite(dict(chosen.validation) if chosen else {})
        ),
        "test": MetadataValue.json(spell_non_finite(row["test"])),
        "pass_criteria": MetadataValue.md(_criteria_markdown(result)),
        "parameter_shift_vs_previous": MetadataValue.json(row["parameter_shift"]),
        "progression": MetadataValue.json(row["progression"]),
        "tries": MetadataValue.json(row["tries"]),
        "stop_reason": result.stop_reason,
        "study_seconds": round(result.tries[-1].seconds if result.tries else 0.0, 2),
        "analysis": MetadataValue.json(spell_non_finite(row["analysis"])),
        "segments": MetadataValue.json(row["segments"]),
        "mlflow_run_id": result.mlflow_run_id,
    }


def build_level_asset(
    spec: LevelSpec,
    previous: LevelSpec | None,
    curriculum: CurriculumSpec,
    universe: Universe,
    trial_profile: str,
) -> AssetsDefinition:
    """The asset of one curriculum level; level N+1 depends on level N (warm start)."""
    n_trials = spec.trials[trial_profile]
    deps = ["market_regimes", "validated_bars", *([previous.asset] if previous else [])]

    @asset(
        name=spec.asset,
        deps=deps,
        group_name="curriculum",
        kinds={"optuna", "vectorbt", "mlflow"},
        # Composed from the loaded curriculum, so the UI shows the numbers in force.
        description=(
            f"Level {spec.level} - {spec.name} ({spec.direction.value}). An Optuna study of "
            f"{n_trials} trials (profile '{trial_profile}') over backtests on the numba engine "
            "(equal to vectorbt) on the train period; the choice is made on validation from the "
            "Pareto front; the test period is reported against the level's pass criteria ("
            + ", ".join(f"{k} {v:g}" for k, v in spec.pass_criteria.items())
            + "). On validation, a win rate below "
            f"{curriculum.progression.repeat_below_win_rate_pct:g} %, a negative return or a "
            f"parameter shift above {curriculum.progression.max_param_shift:.0%} repeats the "
            f"level with {curriculum.progression.repeat_trial_factor:g}x the trials (at most "
            f"{curriculum.progression.max_tries} tries); a win rate above "
            f"{curriculum.progression.skip_min_win_rate_pct:g} % with a Sharpe above "
            f"{curriculum.progression.skip_min_sharpe:g} lets the next level be skipped; "
            "otherwise it advances (docs/spec.md, Progression). Logged to MLflow."
        ),
        tags={"level": str(spec.level)},
    )
    def _level(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        optuna_storage: OptunaStorageResource,
        mlflow_tracking: MlflowTrackingResource,
    ) -> MaterializeResult:
        with warehouse.session():  # one connection for the reads before the study
            data = load_level_data(
                warehouse, universe, curriculum.holdout_days, signals=curriculum_signals(curriculum)
            )
            previous_result = warehouse.latest_level_result(previous.level) if previous else None
            stored = warehouse.latest_level_result(spec.level)
        warm = previous_result.chosen_params if previous_result else None
        if previous_result is not None and previous_result.decision is Decision.SKIP_NEXT:
            # The previous level was strong enough to skip this one (docs/spec.md, Progression).
            result = skipped_level_result(spec, previous_result)
            warehouse.save_level_result(spec.level, spec.asset, context.run.run_id, result)
            reason = result.progression.reasons[0] if result.progression else ""
            context.log.info(f"{spec.asset} skipped: {reason}")
            return MaterializeResult(metadata={"skipped": True, "reason": reason})
        fingerprint = study_fingerprint(spec, curriculum, data)
        study_name = f"{spec.asset}-{fingerprint}"
        storage = optuna_storage.storage(study_name)
        walk_forward_trials = curriculum.robustness.walk_forward_trials[trial_profile]
        chain_trials = previous_result.chain_trials if previous_result else 0
        version = code_version(git_commit())
        level = LevelRun(spec, curriculum, trial_profile, n_trials, fingerprint)
        side_key = study_key(
            spec,
            curriculum,
            study_name=study_name,
            n_trials=n_trials,
            walk_forward_trials=walk_forward_trials,
            warm_start=warm,
            chain_trials=chain_trials,
            code_version=version,
        )
        key = reuse_key(
            spec,
            curriculum,
            study_name=study_name,
            data=level_data_fingerprint(data.bars, data.regimes),
            n_trials=n_trials,
            walk_forward_trials=walk_forward_trials,
            warm_start=warm,
            chain_trials=chain_trials,
            code_version=version,
        )
        complete = complete_trial_count(study_name, storage)
        # Checked only when it would be reused: the check waits for the worker's queue.
        if (
            stored is not None
            and (reusable(stored, key, complete) or retestable(stored, side_key, complete))
            and not _logged_in_full(mlflow_tracking, stored)
        ):
            context.log.warning(
                f"{spec.asset}: the MLflow run of its stored result is not FINISHED (its logging "
                "failed); the level runs again instead of reusing it"
            )
            stored = None
        if stored is not None and reusable(stored, key, complete):
            # Same study, same trials, same everything else: the same result, already logged to
            # MLflow (its run holds the plots and tables). Stored again for this run's records.
            source_run = str(stored.reused_from_run or stored.mlflow_run_id)
            # This cycle's MLflow parent still lists the level: a reference run to the source.
            result = replace(
                stored,
                new_trials=0,
                reused=True,
                reused_from_run=source_run,
                mlflow_run_id=log_reused_study(
                    mlflow_tracking,
                    source_run,
                    cycle_ref(context.run.tags, context.run.run_id),
                    context.run.run_id,
                ),
            )
            warehouse.save_level_result(spec.level, spec.asset, context.run.run_id, result)
            context.log.info(
                f"{spec.asset}: inputs and study unchanged ({result.n_trials} trials); "
                f"reusing the result of MLflow run {source_run}"
            )
            return MaterializeResult(metadata=_level_metadata(result))
        if stored is not None and retestable(stored, side_key, complete):
            # Only bars the study side never reads changed (a new bar lengthened the test era):
            # the study side stands, the test side is computed again (core/study/level_reuse.py).
            result = replace(
                retest_level(spec, curriculum, data, stored), reuse_key=key, study_key=side_key
            )
            run_id = log_retested_level(
                context,
                mlflow_tracking,
                result,
                level,
                data_bars=sorted(data.bars),
                datasets=_datasets(spec, curriculum, data),
                dataset_source=DatasetSource(
                    warehouse.path, "validated_bars", universe.bar_interval
                ),
            )
            result = replace(result, mlflow_run_id=run_id)
            warehouse.save_level_result(spec.level, spec.asset, context.run.run_id, result)
            context.log.info(
                f"{spec.asset}: study side unchanged ({result.n_trials} trials, MLflow run "
                f"{result.study_side_from_run}); test side computed again on the new bars"
            )
            return MaterializeResult(metadata=_level_metadata(result))
        step = max(1, n_trials // 5)
        bar = TrialProgress(f"L{spec.level} {spec.name}", n_trials)
        finished_at: dict[int, float] = {}  # trial number -> clock, for the trial rate

        def progress(record: TrialRecord, done: int) -> None:
            finished_at[record.number] = time.monotonic()
            bar.advance(done, record.metrics, record.feasible)
            if done % step == 0 or done == n_trials:
                context.log.info(f"{spec.asset}: trial {done}/{n_trials} {dict(record.metrics)}")

        mlflow_tracking.start_worker()  # opens the tracking store while the study runs
        started = time.monotonic()
        try:
            outcome = run_level(
                spec,
                curriculum,
                data,
                study=level_study_config(curriculum, study_name, storage, n_trials),
                warm_start=warm,
                on_trial=progress,
                walk_forward_trials=walk_forward_trials,
                chain_trials=chain_trials,
            )
        finally:
            bar.close()
        result = outcome_result(outcome)
        if outcome.study.resumed_trials:
            context.log.info(f"{study_name}: resumed from {outcome.study.resumed_trials} trials")
        trials = trials_table(outcome.study)
        fields = level_run_fields(context, level, result, instruments=data.bars)
        run_id = mlflow_tracking.log_study(
            run_name=fields.run_name,
            tags=fields.tags,
            params=fields.params,
            metrics=fields.metrics,
            trials=trials,
            tables={
                name: frame
                for name, frame in (
                    ("chosen_trades", outcome.chosen_trades),
                    ("chosen_equity", outcome.chosen_equity),
                )
                if frame is not None
            },
            json_artifacts=fields.json_artifacts,
            plots=StudyPlotData(
                trials=trials,
                importance=outcome.analysis.get("importance") or {},
                equity=outcome.chosen_equity,
                title=f"L{spec.level} {spec.name}",
                importance_note=str(outcome.analysis.get("importance_error", "")),
                chosen=outcome.chosen,
                plateau=outcome.analysis.get("plateau"),
            ),
            code_version=version,
            cycle=cycle_ref(context.run.tags, context.run.run_id),
            datasets=_datasets(spec, curriculum, data),
            dataset_source=DatasetSource(warehouse.path, "validated_bars", universe.bar_interval),
            convergence=(
                *best_feasible_so_far(outcome.study.trials),
                *trials_per_second(finished_at, started),
            ),
            # Logged by the tracking worker while the next level's study runs; the promotion
            # waits for it and checks every level's run is FINISHED.
            wait=False,
        )
        result = replace(result, mlflow_run_id=run_id, reuse_key=key, study_key=side_key)
        warehouse.save_level_result(spec.level, spec.asset, context.run.run_id, result)
        verdict = "passed" if outcome.passed else "did not pass"
        context.log.info(f"{spec.asset} {verdict}; MLflow run {run_id}")
        return MaterializeResult(metadata=_level_metadata(result))

    return _level


def build_curriculum_assets(
    curriculum: CurriculumSpec, universe: Universe, trial_profile: str
) -> list[AssetsDefinition]:
    """One asset per level, chained level 1 -> N."""
    levels = curriculum.levels
    return [
        build_level_asset(spec, levels[i - 1] if i else None, curriculum, universe, trial_profile)
        for i, spec in enumerate(levels)
    ]
