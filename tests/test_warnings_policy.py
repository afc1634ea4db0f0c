"""pytest's warning filters (pyproject.toml): a deprecated, superseded, beta or experimental API
called from this project's code fails the test run, a third party's own deprecation does not."""

import warnings

import pytest
from dagster import BetaWarning, MultiToSingleDimensionPartitionMapping
from optuna.exceptions import ExperimentalWarning


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning, ExperimentalWarning])
@pytest.mark.parametrize("module", ["ffe_dagster.core.study.optimize", "tests.x", "benchmarks.y"])
def test_a_warning_from_our_code_is_an_error(category: type[Warning], module: str) -> None:
    with pytest.raises(category, match="old API"):
        warnings.warn_explicit("old API", category, f"{module}.py", 1, module=module)


def test_a_third_party_deprecation_is_not_an_error() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("old API", DeprecationWarning, "lib.py", 1, module="somelib")
    assert seen == []  # ignored: theirs to fix


def test_a_beta_dagster_api_used_here_unsilenced_fails() -> None:
    # Dagster attributes the warning to the caller: this test module.
    with pytest.raises(BetaWarning, match="MultiToSingleDimensionPartitionMapping"):
        MultiToSingleDimensionPartitionMapping(partition_dimension_name="instrument")
