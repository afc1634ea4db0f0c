"""The cycle report: curriculum report, deployment recommendation and promotion decisions,
published to Dagster and on the cycle's parent run in MLflow. Called by the promotion asset once
the regimes are decided."""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import MetadataValue

from ffe_dagster.core.reporting.curriculum_report import curriculum_report
from ffe_dagster.core.reporting.recommendation import deployment_recommendation, regime_verdicts
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import CycleRef


def publish_cycle_report(
    mlflow_tracking: MlflowTrackingResource,
    level_results: Sequence[LevelResult],
    promotion_summary: Mapping[str, Mapping[str, Any]] | None,
    cycle: CycleRef,
    *,
    promotes: Mapping[int, Sequence[str]] | None = None,
    partition: str = "unpartitioned",
    decisions: str | None = None,
) -> dict[str, MetadataValue]:
    """Render the cycle's report and recommendation, log both with the promotion decisions on
    the cycle's parent MLflow run (which this finishes), and return them as Dagster metadata.

    ``level_results`` are the stored level results (``warehouse.latest_level_result``),
    ``promotion_summary`` the decisions per regime (``{"BULL": {"promoted", "version", "level",
    "reason", "model_version"?}}``), ``cycle`` the cycle and this step's Dagster run,
    ``promotes`` the regimes of each level (curriculum.yaml) when the summary does not name them
    all, ``decisions`` every stage decision of this promotion as a Markdown table.
    """
    report = curriculum_report(level_results, promotion_summary, promotes=promotes)
    recommendation = deployment_recommendation(level_results, promotion_summary, promotes=promotes)
    verdicts = regime_verdicts(level_results, promotion_summary, promotes=promotes)
    metrics: dict[str, float] = {"regimes_to_deploy": float(sum(v.deploy for v in verdicts))}
    for r in level_results:
        prefix = f"level_{r.level}"
        metrics[f"{prefix}_passed"] = float(r.passed)
        for key in ("sharpe", "win_rate_pct", "max_drawdown_pct", "total_return_pct"):
            if key in r.test:
                metrics[f"{prefix}_test_{key}"] = float(r.test[key])
    for v in verdicts:
        metrics[f"deploy_{v.regime.lower()}"] = float(v.deploy)
    level_runs = ",".join(r.mlflow_run_id for r in level_results if r.mlflow_run_id is not None)
    documents = {
        "curriculum_report.md": report,
        "deployment_recommendation.md": recommendation,
        **({"promotion_decisions.md": decisions} if decisions else {}),
    }
    report_run = mlflow_tracking.log_cycle_report(
        cycle=cycle,
        tags={
            "report_dagster_run_id": cycle.dagster_run_id,
            "partition": partition,
            "levels": ",".join(str(r.level) for r in level_results),
            **({"level_run_ids": level_runs} if level_runs else {}),
        },
        documents=documents,
        json_artifacts={
            "level_results.json": [r.to_json() for r in level_results],
            "promotion_summary.json": promotion_summary or {},
        },
        metrics=metrics,
        note=recommendation,
    )
    return {
        "curriculum_report": MetadataValue.md(report),
        "deployment_recommendation": MetadataValue.md(recommendation),
        "report_mlflow_run_id": MetadataValue.text(report_run),
    }
