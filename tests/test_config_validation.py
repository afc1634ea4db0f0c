"""Configuration is validated at load: environment URLs and cron, secrets of the sources in use,
limits of the YAML files and of the promotion; every message names the key and hides secrets."""

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._utils.schedules import is_valid_cron_string

from ffe_dagster.config import (
    ConfigError,
    load_curriculum,
    load_promotion,
    load_universe,
    require_credentials,
)
from ffe_dagster.config.environment import is_valid_cron
from ffe_dagster.config.settings import CONFIG_DIR, PACKAGE_DIR, PROJECT_DIR, Settings
from ffe_dagster.core.promotion.config import (
    ColdGateConfig,
    LimitedGateConfig,
    PromotionConfig,
    SafetyLimits,
    WarmGateConfig,
)

PASSWORD = "s3cr3tPW"
TOKEN = "T0KENxyz"


def _env_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert message.startswith("environment: ")
    return message


def _copy(tmp_path: Path, name: str, edit: Any) -> Path:
    raw = yaml.safe_load((CONFIG_DIR / name).read_text())
    edit(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bundled_configs_load_cleanly() -> None:
    files_only = load_universe(CONFIG_DIR / "universe.yaml")
    live = load_universe(CONFIG_DIR / "universe_live.yaml")
    curriculum = load_curriculum(CONFIG_DIR / "curriculum.yaml")
    assert files_only.instruments and live.instruments and curriculum.levels
    require_credentials(files_only, {})  # the bundled files need no secret
    require_credentials(live, {"OANDA_API_TOKEN": TOKEN})
    settings = Settings.from_env({})
    assert settings.studies_url.startswith("journal:///")
    assert settings.registry_url.startswith("sqlite:///")
    assert load_promotion(CONFIG_DIR / "promotion.yaml").safety.min_trades >= 1


@pytest.mark.parametrize(
    "env",
    [
        {"FFE_STUDIES_URL": "postgresql+psycopg2://bob:pw@db.example:5432/optuna"},
        {"FFE_STUDIES_URL": "postgresql+psycopg2:///optuna?host=/tmp/pg"},
        {"FFE_STUDIES_URL": "sqlite:////tmp/studies.db", "FFE_REGISTRY_URL": "sqlite:///r.db"},
        {"MLFLOW_TRACKING_URI": "file:/tmp/mlruns"},
        {"MLFLOW_TRACKING_URI": "https://mlflow.example:5000"},
        {"MLFLOW_TRACKING_URI": "postgresql+psycopg2://u:pw@db/mlflow"},
        {"FFE_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"},
        {"FFE_WEBHOOK_URL": ""},  # unset: no webhook
        {"FFE_CYCLE_CRON": "15 */2 * * mon-fri"},
        {"FFE_CYCLE_CRON": "@hourly"},
    ],
)
def test_valid_environment_values_are_accepted(env: dict[str, str]) -> None:
    Settings.from_env(env)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/var/studies.db", "journal:///absolute/path or an SQLAlchemy URL"),
        ("journal://", "journal:///absolute/path"),
        (f"mysql+pymysql://bob:{PASSWORD}@db/optuna", "unsupported backend mysql+pymysql"),
        ("sqlite://", "must name a file (sqlite:///path/file.db)"),
        (f"postgres ql://bob:{PASSWORD}@db/optuna", "must be an SQLAlchemy URL"),
        ("postgresql+psycopg2://bob@db", "must name a database"),
    ],
)
def test_a_bad_studies_url_is_named_without_its_password(url: str, expected: str) -> None:
    message = _env_error({"FFE_STUDIES_URL": url})
    assert "FFE_STUDIES_URL" in message and expected in message
    assert PASSWORD not in message


@pytest.mark.parametrize("var", ["FFE_STUDIES_URL", "FFE_REGISTRY_URL", "MLFLOW_TRACKING_URI"])
def test_plain_postgresql_asks_for_the_psycopg2_driver(var: str) -> None:
    message = _env_error({var: f"postgresql://bob:{PASSWORD}@db.example:5432/optuna"})
    assert var in message
    assert "write postgresql+psycopg2://... instead of postgresql://..." in message
    assert "bob:***@db.example:5432/optuna" in message  # rendered with the password hidden
    assert PASSWORD not in message


def test_the_registry_cannot_be_a_journal_file() -> None:
    message = _env_error({"FFE_REGISTRY_URL": "journal:///tmp/registry.journal"})
    assert "FFE_REGISTRY_URL must be an SQLAlchemy URL" in message


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"mysql://bob:{PASSWORD}@db/mlflow", "got mysql://..."),
        ("mlruns", "got a value without a scheme"),
        (f"http://bob:{PASSWORD}@/x", "must name a host"),
        ("file:", "must name a folder"),
    ],
)
def test_a_bad_mlflow_uri_is_named_without_its_password(uri: str, expected: str) -> None:
    message = _env_error({"MLFLOW_TRACKING_URI": uri})
    assert "MLFLOW_TRACKING_URI" in message and expected in message
    assert "sqlite:///path/mlflow.db" in message or "host" in message or "folder" in message
    assert PASSWORD not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"ftp://hooks.slack.com/services/T00/B00/{TOKEN}?token={TOKEN}",
            "got ftp://hooks.slack.com",
        ),
        (f"https:///services/T00/B00/{TOKEN}", "got https://"),
        (f"hooks.slack.com/services/{TOKEN}", "got a URL without a scheme"),
        (f"https://hooks.slack.com:99999/services/{TOKEN}", "got an unparseable URL"),
    ],
)
def test_a_bad_webhook_url_never_shows_its_path_or_token(url: str, shown: str) -> None:
    message = _env_error({"FFE_WEBHOOK_URL": url})
    assert "FFE_WEBHOOK_URL must be an http:// or https:// URL with a host" in message
    assert shown in message
    assert TOKEN not in message and "services" not in message


@pytest.mark.parametrize("cron", ["0 */6 * *", "61 * * * *", "0 0 31 2 *", "every 6h", "@reboot"])
def test_a_bad_cron_is_rejected(cron: str) -> None:
    message = _env_error({"FFE_CYCLE_CRON": cron})
    assert "FFE_CYCLE_CRON must be a 5-field cron string" in message and repr(cron) in message


@pytest.mark.parametrize(
    "cron",
    [
        "0 */6 * * *",
        "*/15 * * * *",
        "0 0 * * 7",
        "0 0 1 jan,jul *",
        "0 9-17/2 * * MON-FRI",
        "0 0 L * *",
        "0 0 * * 5#2",
        "@daily",
        "0 0 30 2 *",
        "0 0 0 * *",
        "0 */0 * * *",
        "0 0 * * * *",
        "0 0 * * 5L",
        "",
    ],
)
def test_the_cron_check_agrees_with_dagster(cron: str) -> None:
    assert is_valid_cron(cron) == is_valid_cron_string(cron)


def test_every_environment_problem_is_reported_at_once() -> None:
    message = _env_error(
        {
            "FFE_TRIAL_PROFILE": "huge",
            "FFE_STUDIES_URL": f"postgresql://bob:{PASSWORD}@db/optuna",
            "MLFLOW_TRACKING_URI": "mlruns",
            "FFE_WEBHOOK_URL": f"ftp://hooks.example/{TOKEN}",
            "FFE_CYCLE_CRON": "never",
        }
    )
    assert message.startswith("environment: 5 configuration problems:")
    for var in (
        "FFE_TRIAL_PROFILE",
        "FFE_STUDIES_URL",
        "MLFLOW_TRACKING_URI",
        "FFE_WEBHOOK_URL",
        "FFE_CYCLE_CRON",
    ):
        assert f"\n  - {var}" in message
    assert PASSWORD not in message and TOKEN not in message


def test_the_oanda_token_is_required_only_when_an_instrument_reads_from_oanda(
    tmp_path: Path,
) -> None:
    live = load_universe(CONFIG_DIR / "universe_live.yaml")
    for env in ({}, {"OANDA_API_TOKEN": ""}, {"OANDA_API_TOKEN": "  "}):
        with pytest.raises(ConfigError, match="OANDA_API_TOKEN is not set") as info:
            require_credentials(live, env)
        assert "EUR_USD, GBP_USD" in str(info.value) and "'oanda'" in str(info.value)
    require_credentials(live, {"OANDA_API_TOKEN": TOKEN})
    require_credentials(load_universe(CONFIG_DIR / "universe.yaml"), {})

    def crypto_only(raw: dict) -> None:  # OANDA configured, but no instrument reads from it
        raw["instruments"] = [i for i in raw["instruments"] if i["source"] == "ccxt"]

    require_credentials(load_universe(_copy(tmp_path, "universe_live.yaml", crypto_only)), {})


def _all_named(load: Callable[[Path], object], path: Path, expected: list[str]) -> str:
    """Load ``path``, expecting one ``ConfigError`` that names the file and exactly the
    ``expected`` problems; its message."""
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {len(expected)} configuration problems:")
    for line in expected:
        assert line in message
    assert len(info.value.problems) == len(expected)
    return message


def _bad_curriculum(raw: dict) -> None:
    raw["levels"][2]["trials"]["quick"] = 0
    del raw["levels"][0]["trials"]["full"]
    raw["levels"][1]["pass"]["min_win_rate_pct"] = 120
    raw["levels"][1]["pass"]["min_luck"] = 1
    raw["levels"][0]["windows"][0]["end"] = "2019-01-01"
    raw["optimizer"].update(batch_size=0, patience=0, timeout_s=0, sampler="random")
    raw["constraints"] = {"min_trades": -1, "max_drawdown_pct": 0, "min_win_rate_pct": 101}
    raw["parameters"]["stop_loss_pct"] = {"low": 5.0, "high": 5.0}
    raw["strategy_parameters"]["sma_crossover"]["fast_window"]["step"] = 0
    raw["robustness"].update(walk_forward_windows=1, pbo_blocks=5, fee_multipliers=[-1.0])
    raw["holdout_days"] = -1
    raw["costs"]["fee_pct"] = -0.1
    raw["progression"]["max_tries"] = 0


def test_curriculum_limits_out_of_range_are_all_named(tmp_path: Path) -> None:
    path = _copy(tmp_path, "curriculum.yaml", _bad_curriculum)
    expected = [
        "levels[2].trials.quick must be >= 1, got 0",
        "levels[0].trials.full is missing",
        "levels[1].pass.min_win_rate_pct must be in [0, 100], got 120",
        "levels[1].pass.min_luck is not a known criterion",
        "levels[0].windows[0]: start must be on or before end",
        "optimizer.batch_size must be >= 1, got 0",
        "optimizer.patience (or null) must be >= 1, got 0",
        "optimizer.timeout_s (or null) must be > 0, got 0",
        "optimizer.sampler must be one of ['tpe', 'nsga2'], got 'random'",
        "constraints.min_trades must be >= 0, got -1",
        "constraints.max_drawdown_pct must be in (0, 100], got 0",
        "constraints.min_win_rate_pct must be in [0, 100], got 101",
        "parameters.stop_loss_pct: low must be < high",
        "strategy_parameters.sma_crossover.fast_window.step must be > 0, got 0",
        "robustness.walk_forward_windows must be >= 2, got 1",
        "robustness.pbo_blocks must be an even number >= 4, got 5",
        "robustness.fee_multipliers[0] must be >= 0, got -1",
        "holdout_days must be >= 0, got -1",
        "costs.fee_pct must be >= 0, got -0.1",
        "progression.max_tries must be >= 1, got 0",
    ]
    _all_named(load_curriculum, path, expected)


@pytest.mark.parametrize(("train", "validation"), [(0.9, 0.2), (0.0, 0.2), (0.6, -0.1), (0.5, 0.5)])
def test_split_fractions_must_leave_a_test_period(
    tmp_path: Path, train: float, validation: float
) -> None:
    def edit(raw: dict) -> None:
        raw["split"] = {"train": train, "validation": validation}

    with pytest.raises(ConfigError, match=r"split.train and split.validation must each be in"):
        load_curriculum(_copy(tmp_path, "curriculum.yaml", edit))


def _bad_universe(raw: dict) -> None:
    raw["history_start"] = "2024-01-01"
    raw["history_end"] = "2023-01-01"
    raw["sources"]["oanda"].update(
        max_requests_per_second=0, environment="demo", max_candles=6000, timeout_s=0
    )
    raw["sources"]["ccxt"].update(deadline_s=0, page_bars=0, base_url=f"ftp://x/{TOKEN}")
    raw["validation"] = {"max_quarantine_fraction": 1.5, "max_abs_log_return": 0}


def test_universe_limits_out_of_range_are_all_named(tmp_path: Path) -> None:
    path = _copy(tmp_path, "universe_live.yaml", _bad_universe)
    expected = [
        "history_start must be before history_end (or history_end null), "
        "got 2024-01-01 >= 2023-01-01",
        "sources.oanda.max_requests_per_second must be > 0, got 0",
        "sources.oanda.environment must be one of ['practice', 'live'], got 'demo'",
        "sources.oanda.max_candles must be in [1, 5000], got 6000",
        "sources.oanda.timeout_s must be > 0, got 0",
        "sources.ccxt.deadline_s must be > 0, got 0",
        "sources.ccxt.page_bars must be >= 1, got 0",
        "sources.ccxt.base_url must be an http:// or https:// URL with a host, got ftp://x",
        "validation.max_quarantine_fraction must be in [0, 1], got 1.5",
        "validation.max_abs_log_return must be > 0, got 0",
    ]
    assert TOKEN not in _all_named(load_universe, path, expected)


def test_a_structural_universe_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = _copy(tmp_path, "universe.yaml", lambda raw: raw.pop("history_start"))
    with pytest.raises(ConfigError, match=r"universe.yaml: missing key 'history_start'"):
        load_universe(path)


def test_promotion_limits_out_of_range() -> None:
    with pytest.raises(ValueError, match="safety limits") as info:
        SafetyLimits(max_daily_loss_usd=0.0, max_drawdown_pct=120.0, min_trades=0)
    message = str(info.value)
    assert "max_daily_loss_usd must be > 0, got 0" in message
    assert "max_drawdown_pct must be in (0, 100], got 120" in message
    assert "min_trades must be >= 1, got 0" in message
    with pytest.raises(ValueError, match=r"COLD gate: window_days must be increasing"):
        ColdGateConfig(window_days=(14, 7))
    with pytest.raises(ValueError, match=r"COLD gate: min_win_rate_pct must be in \[0, 100\]"):
        ColdGateConfig(min_win_rate_pct=140.0)
    with pytest.raises(ValueError, match=r"WARM gate: max_drawdown_pct must be in \(0, 100\]"):
        WarmGateConfig(max_drawdown_pct=0.0)
    with pytest.raises(ValueError, match=r"LIMITED gate: min_winning_trades must be >= 1"):
        LimitedGateConfig(min_winning_trades=0)


def test_the_promotion_file_is_the_source_and_the_code_defaults_equal_it() -> None:
    # Tests and tools build PromotionConfig() without the file; its defaults must be the file's.
    assert CONFIG_DIR == PACKAGE_DIR / "config"
    assert load_promotion(CONFIG_DIR / "promotion.yaml") == PromotionConfig()


def test_every_promotion_limit_in_the_file_has_a_comment() -> None:
    lines = (CONFIG_DIR / "promotion.yaml").read_text().splitlines()
    keys = 0
    for i, line in enumerate(lines):
        if re.match(r"^\s+\w+:", line):  # a limit (sections are not indented)
            keys += 1
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), line
    raw = yaml.safe_load((CONFIG_DIR / "promotion.yaml").read_text())
    assert keys == sum(len(section) for section in raw.values()) == 20


def test_the_promotion_file_can_be_moved(tmp_path: Path) -> None:
    assert Settings.from_env({}).promotion_path == CONFIG_DIR / "promotion.yaml"
    moved = tmp_path / "limits.yaml"
    assert Settings.from_env({"FFE_PROMOTION": str(moved)}).promotion_path == moved
    with pytest.raises(FileNotFoundError, match=f"configuration file not found: {moved}"):
        load_promotion(moved)


def _bad_promotion(raw: dict) -> None:
    del raw["cold"]["min_trades"]
    raw["warm"]["max_drawdwn_pct"] = 8.0
    raw["warm"]["max_drawdown_pct"] = 0.0
    raw["limited"].update(capital_fraction=0.0, max_wait_hours=10.0)
    raw["safety"].update(max_daily_loss_usd="five", min_trades=2.5)
    raw["canary"] = {"min_hours": 1}


def test_promotion_keys_missing_unknown_or_out_of_range_are_all_named(tmp_path: Path) -> None:
    path = _copy(tmp_path, "promotion.yaml", _bad_promotion)
    expected = [
        "canary is not a known section; known: ['cold', 'warm', 'limited', 'safety']",
        "cold.min_trades is missing",
        "warm.max_drawdwn_pct is not a known limit",
        "warm.max_drawdown_pct must be in (0, 100], got 0",
        "limited.capital_fraction must be in (0, 1], got 0",
        "limited.max_wait_hours must be >= min_hours (24), got 10",
        "safety.max_daily_loss_usd must be a number, got 'five'",
        "safety.min_trades must be a whole number, got 2.5",
    ]
    _all_named(load_promotion, path, expected)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda raw: raw.pop("safety"), "safety is missing"),
        (lambda raw: raw.update(warm=[4.0]), "warm must be a mapping of its limits, got [4.0]"),
        (
            lambda raw: raw["cold"].update(window_days=[14, 7]),
            "cold.window_days must be increasing whole days >= 1, got [14, 7]",
        ),
        (
            lambda raw: raw["cold"].update(window_days=7),
            "cold.window_days must be a list of whole numbers, got 7",
        ),
        (
            lambda raw: raw["safety"].update(min_win_rate_pct=True),
            "safety.min_win_rate_pct must be a number, got True",
        ),
    ],
)
def test_a_bad_promotion_section_names_the_file_and_the_key(
    tmp_path: Path, edit: Any, expected: str
) -> None:
    path = _copy(tmp_path, "promotion.yaml", edit)
    with pytest.raises(ConfigError) as info:
        load_promotion(path)
    assert str(info.value) == f"{path}: {expected}"


def test_the_settings_load_without_the_numeric_stack() -> None:
    # ``ffe_dagster.config`` imports its loaders on first use, so a launcher that needs only the
    # settings (local_production.py: PROJECT_DIR) does not load polars, numba or GX.
    heavy = ("polars", "numba", "great_expectations", "ffe_dagster.core")
    code = (
        "import sys, ffe_dagster.config.settings\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_DIR
    )
    assert run.stdout.strip() == "[]"
