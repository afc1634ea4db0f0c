"""What a cycle tells people: the curriculum report, the deployment recommendation, the study plots
and the notifications of decisions.
"""

from ffe_dagster.core.reporting.figures import StudyPlot
from ffe_dagster.core.reporting.notifications import (
    DecisionFacts,
    DeliveryCounts,
    Kind,
    Notification,
    ParamChange,
    UiLinks,
    decision_notification,
    delivered_payload,
    param_changes,
    retry_delay_s,
    run_failure_notification,
    verdict_change,
)
from ffe_dagster.core.reporting.plots import (
    StudyPlotData,
    equity_drawdown,
    optimization_history,
    study_plots,
)
from ffe_dagster.core.reporting.recommendation import (
    deployment_recommendation,
    failure_phrases,
    regime_verdicts,
)
from ffe_dagster.core.reporting.sensitivity import SensitivitySurface, sensitivity_surface_data

__all__ = [
    "DecisionFacts",
    "DeliveryCounts",
    "Kind",
    "Notification",
    "ParamChange",
    "SensitivitySurface",
    "StudyPlot",
    "StudyPlotData",
    "UiLinks",
    "decision_notification",
    "delivered_payload",
    "deployment_recommendation",
    "equity_drawdown",
    "failure_phrases",
    "optimization_history",
    "param_changes",
    "regime_verdicts",
    "retry_delay_s",
    "run_failure_notification",
    "sensitivity_surface_data",
    "study_plots",
    "verdict_change",
]
