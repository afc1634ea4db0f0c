"""Required means required: with ``FFE_NOTIFY_REQUIRED`` on, the definitions refuse to load
without a valid webhook URL, and a version that passed WARM does not enter LIMITED while
notifications have been undeliverable for longer than ``FFE_NOTIFY_STALL_MINUTES``."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.config.errors import ConfigError
from ffe_dagster.config.settings import Settings
from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.promotion.config import PromotionRegime, Stage
from ffe_dagster.core.promotion.records import Action
from ffe_dagster.core.reporting.notifications import UiLinks
from ffe_dagster.core.study.selection import Candidate
from ffe_dagster.definitions import build_definitions
from ffe_dagster.promotion.state_machine import RegimeCandidates
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.webhook import WebhookResource
from ffe_dagster.sensors.notify import DeliveryPolicy, deliver_due
from tests.fakes.receiver import SECRET, WebhookReceiver
from tests.promotion_cycle_helpers import T0, A, decisions, load_history, run_cycle, upto

LINKS = UiLinks(dagster="http://127.0.0.1:3000", mlflow="http://127.0.0.1:5000")


def test_required_without_a_url_refuses_to_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FFE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("FFE_NOTIFY_REQUIRED", "true")
    monkeypatch.delenv("FFE_WEBHOOK_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        build_definitions()
    message = str(info.value)
    assert message.startswith("environment: FFE_NOTIFY_REQUIRED is on, so FFE_WEBHOOK_URL must")
    assert "set FFE_WEBHOOK_URL, or set FFE_NOTIFY_REQUIRED=0" in message


def test_required_with_a_bad_url_names_only_its_host() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {"FFE_NOTIFY_REQUIRED": "1", "FFE_WEBHOOK_URL": f"ftp://hooks.example/{SECRET}"}
        )
    assert "FFE_WEBHOOK_URL must be an http:// or https:// URL with a host, got ftp://hooks." in (
        str(info.value)
    )
    assert SECRET not in str(info.value)


def test_notification_settings_are_checked_together() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {
                "FFE_NOTIFY_REQUIRED": "maybe",
                "FFE_NOTIFY_STALL_MINUTES": "-5",
                "FFE_DAGSTER_UI_URL": "localhost:3000",
            }
        )
    assert info.value.problems == (
        "FFE_NOTIFY_REQUIRED must be one of 1, true, yes, on, 0, false, no, off; got 'maybe'",
        "FFE_NOTIFY_STALL_MINUTES must be > 0, got '-5'",
        "FFE_DAGSTER_UI_URL must be an http(s)://host[:port] base URL, got localhost://",
    )


def test_required_with_a_url_loads_and_reaches_the_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "FFE_VAR_DIR": str(tmp_path / "var"),
        "FFE_NOTIFY_REQUIRED": "yes",
        "FFE_NOTIFY_STALL_MINUTES": "15",
        "FFE_WEBHOOK_URL": f"https://hooks.example/{SECRET}",
        "FFE_MLFLOW_UI_URL": "https://mlflow.example",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.notify_required, settings.notify_stall_minutes) == (True, 15.0)
    assert settings.mlflow_ui_url == "https://mlflow.example"
    assert settings.dagster_ui_url == "http://127.0.0.1:3000"
    resources = build_definitions(settings).resources
    assert resources is not None
    registry = resources["registry"]
    assert isinstance(registry, ParameterRegistryResource)
    assert (registry.notify_required, registry.notify_stall_minutes) == (True, 15.0)


def test_off_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.notify_required is False and settings.notify_stall_minutes == 60.0


def test_an_undeliverable_required_notification_pauses_promotion_to_limited(
    tmp_path: Path,
) -> None:
    history: dict[str, pl.DataFrame] = load_history()
    registry = ParameterRegistryResource(
        url=f"sqlite:///{tmp_path / 'registry.db'}",
        notify_required=True,
        notify_stall_minutes=60.0,
    )
    level4 = RegimeCandidates(
        regime=PromotionRegime.DEFAULT,
        level=4,
        direction=Direction.BOTH,
        candidates=[Candidate(12, A, {}, {"sharpe": 2.0}, True)],
    )
    five = timedelta(minutes=5)
    report = run_cycle(registry, upto(history, T0), T0 + five, "cycle-1", [level4])
    assert decisions(report) == [("DEFAULT", 1, Stage.COLD, Action.ADVANCE)]

    receiver = WebhookReceiver().start()
    receiver.stop()  # the endpoint is down
    webhook = WebhookResource(url=receiver.url)
    failed = deliver_due(registry.outbox(), webhook, LINKS, datetime.now(UTC), DeliveryPolicy())
    assert failed.failed == 1

    # 13 days later v1 passes WARM (as in test_promotion_cycle), but nobody heard of it
    t3 = T0 + timedelta(days=13)
    report = run_cycle(registry, upto(history, t3), t3 + five, "cycle-3", [level4])
    assert decisions(report)[0] == ("DEFAULT", 1, Stage.WARM, Action.WAIT)
    reason = report.rows[0].reason
    assert reason.startswith("WARM passed on ")
    assert (
        "notifications are required and undelivered since 2022-11-01 00:05 UTC (webhook "
        "unreachable: ConnectionRefusedError): promotion to LIMITED and FULL waits for delivery"
    ) in reason
    assert registry.version("DEFAULT", 1).stage == Stage.WARM
    held = registry.transitions("DEFAULT")[-1]
    assert (held.action, held.run_id, held.reason) == (Action.WAIT, "cycle-3", reason)

    receiver.start()  # back: the pending notification is delivered, the hold lifts
    later = datetime.now(UTC) + timedelta(hours=1)
    try:
        assert deliver_due(registry.outbox(), webhook, LINKS, later, DeliveryPolicy()).sent == 1
    finally:
        receiver.stop()
    assert registry.delivery_hold(t3 + 2 * five) is None
    report = run_cycle(registry, upto(history, t3), t3 + 2 * five, "cycle-3b", [level4])
    assert decisions(report)[0] == ("DEFAULT", 1, Stage.WARM, Action.ADVANCE)
    assert registry.version("DEFAULT", 1).stage == Stage.LIMITED
