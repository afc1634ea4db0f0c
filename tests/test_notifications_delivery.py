"""Delivery you can rely on, against a real local HTTP receiver: a receiver that is down, then
answers 500, then recovers gets every notification exactly once; each attempt is recorded; the
counts show on the ``notification_outbox`` asset; a failed run goes through the same outbox."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, build_run_status_sensor_context, build_sensor_context, job, op

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.reporting.notifications import UiLinks
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.webhook import WebhookResource
from ffe_dagster.sensors.failure import build_failure_sensor
from ffe_dagster.sensors.notify import (
    OUTBOX_ASSET,
    DeliveryPolicy,
    NotificationDeliveryError,
    build_notify_sensor,
    deliver_due,
)
from tests.fakes.receiver import SECRET, WebhookReceiver

LINKS = UiLinks(dagster="http://127.0.0.1:3000", mlflow="http://127.0.0.1:5000")
POLICY = DeliveryPolicy(retry_base_s=30.0, retry_cap_s=3600.0)
T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def _three_decisions(registry: ParameterRegistryResource) -> None:
    for n, stop in enumerate((1.2, 1.5, 1.8), start=1):
        registry.record(
            regime="BULL",
            level=1,
            params={"stop_loss_pct": stop},
            metrics={"sharpe": 1.0},
            stage=Stage.FULL,
            promoted=True,
            reason=f"import {n}",
            trigger="manual",
            run_id=f"run-{n}",
        )


def test_down_then_500_then_back_delivers_each_notification_exactly_once(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _three_decisions(registry)
    outbox = registry.outbox()
    webhook = WebhookResource(url=receiver.url)
    now = datetime.now(UTC)

    receiver.stop()  # down: nothing listens on the port
    down = deliver_due(outbox, webhook, LINKS, now, POLICY)
    assert (down.sent, down.failed) == (0, 1)
    assert down.error is not None and "unreachable" in down.error and SECRET not in down.error
    assert "next attempt in 30 s" in down.error

    receiver.status = 500
    receiver.start()  # up again on the same port, but refusing
    refused = deliver_due(outbox, webhook, LINKS, now + timedelta(seconds=1), POLICY)
    # the first notification is not due before its 30 s backoff; the second is tried and refused
    assert (refused.sent, refused.failed) == (0, 1) and "HTTP 500" in (refused.error or "")
    assert [r.json["reason"] for r in receiver.received] == ["import 2"]
    counts = outbox.counts()
    assert (counts.sent, counts.pending, counts.retried, counts.failed) == (0, 3, 2, 2)

    # the third, never tried, is due and refused too; one attempt per tick while it fails
    third = deliver_due(outbox, webhook, LINKS, now + timedelta(seconds=20), POLICY)
    assert (third.sent, third.failed) == (0, 1)
    # within every backoff: nothing is due, nothing is posted
    early = deliver_due(outbox, webhook, LINKS, now + timedelta(seconds=21), POLICY)
    assert (early.sent, early.failed) == (0, 0) and len(receiver.received) == 2

    receiver.status = 200
    back = deliver_due(outbox, webhook, LINKS, now + timedelta(minutes=5), POLICY)
    assert (back.sent, back.failed) == (3, 0)
    again = deliver_due(outbox, webhook, LINKS, now + timedelta(hours=5), POLICY)
    assert (again.sent, again.failed) == (0, 0)

    accepted = receiver.accepted()
    assert sorted(r.json["reason"] for r in accepted) == ["import 1", "import 2", "import 3"]
    assert len({r.key for r in accepted}) == 3  # each exactly once
    assert all(r.key == r.json["key"] for r in receiver.received)  # the header is the key
    # the refused POST and its retry carried the same key, so a receiver can drop a repeat
    assert receiver.received[0].key == next(
        r.key for r in accepted if r.json["reason"] == "import 2"
    )
    attempts = [
        (a["outbox_id"], a["attempt"], a["ok"], a["http_status"]) for a in outbox.attempts()
    ]
    assert attempts == [
        (1, 1, False, None),
        (2, 1, False, 500),
        (3, 1, False, 500),
        (1, 2, True, 200),
        (2, 2, True, 200),
        (3, 2, True, 200),
    ]
    counts = outbox.counts()
    assert (counts.sent, counts.pending, counts.retried, counts.failed) == (3, 0, 3, 3)
    assert all(row["status"] == "sent" and row["delivered_at"] for row in outbox.rows())


def test_a_claimed_notification_is_not_handed_to_a_second_deliverer(tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _three_decisions(registry)
    outbox = registry.outbox()
    now = datetime.now(UTC)
    lease = timedelta(minutes=2)
    first = next(outbox.claim_due(now, lease=lease))
    others = [d.id for d in outbox.claim_due(now, lease=lease)]
    assert first.id not in others and len(others) == 2
    # after the lease a crashed deliverer's row is due again
    assert [d.id for d in outbox.claim_due(now + lease + timedelta(seconds=1), lease=lease)] == [
        first.id,
        *others,
    ]


def _observed(instance: DagsterInstance) -> dict[str, Any]:
    records = instance.fetch_observations(OUTBOX_ASSET, limit=1).records
    assert records, "no observation of notification_outbox"
    observation = records[0].asset_observation
    assert observation is not None
    return {k: v.value for k, v in observation.metadata.items()}


def test_the_sensor_delivers_fails_loudly_and_shows_the_counts(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _three_decisions(registry)
    sensor = build_notify_sensor(LINKS, POLICY)
    webhook = WebhookResource(url=receiver.url)
    with DagsterInstance.ephemeral() as instance:
        receiver.status = 503
        context = build_sensor_context(
            instance=instance, resources={"registry": registry, "webhook": webhook}
        )
        with pytest.raises(NotificationDeliveryError, match="HTTP 503") as info:
            sensor(context)  # type: ignore[call-arg]
        assert SECRET not in str(info.value) and "3 notification(s) wait" in str(info.value)
        shown = _observed(instance)
        assert (shown["sent"], shown["pending"], shown["failed"]) == (0, 3, 1)
        assert shown["last_error"].startswith("webhook answered HTTP 503")
        assert all(SECRET not in str(v) for v in shown.values())

        receiver.status = 200
        later = datetime.now(UTC) + timedelta(minutes=1)
        from ffe_dagster.sensors.notify import deliver_and_report

        summary = deliver_and_report(instance, registry, webhook, LINKS, POLICY, now=later)
        assert summary.startswith("sent 3")
        shown = _observed(instance)
        assert (shown["sent"], shown["pending"], shown["retried"], shown["failed"]) == (3, 0, 1, 1)


def test_without_a_url_notifications_wait_in_the_outbox(tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _three_decisions(registry)
    sensor = build_notify_sensor(LINKS, POLICY)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance, resources={"registry": registry, "webhook": WebhookResource()}
        )
        skip = sensor(context)  # type: ignore[call-arg]
        assert "FFE_WEBHOOK_URL is not set" in str(skip)
        assert _observed(instance)["pending"] == 3


@op
def explode() -> None:
    raise ValueError("bars table is locked")


@job(tags={"ffe/trigger": "schedule"})
def doomed_job() -> None:
    explode()


def test_a_failed_run_whose_notification_fails_is_retried_by_the_outbox(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    webhook = WebhookResource(url=receiver.url)
    with DagsterInstance.ephemeral() as instance:
        result = doomed_job.execute_in_process(instance=instance, raise_on_error=False)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_webhook",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"registry": registry, "webhook": webhook},
        ).for_run_failure()
        receiver.status = 500
        with pytest.raises(NotificationDeliveryError, match="HTTP 500"):
            build_failure_sensor(LINKS, POLICY)(context)  # type: ignore[call-arg]
        (row,) = registry.outbox().rows()
        assert (row["kind"], row["status"], row["attempts"]) == ("run_failure", "pending", 1)
        assert _observed(instance)["failed"] == 1

        receiver.status = 200
        later = datetime.now(UTC) + timedelta(minutes=1)
        sent = deliver_due(registry.outbox(), webhook, LINKS, later, POLICY)
        assert sent.sent == 1
    delivered = receiver.accepted()[0].json
    assert delivered["key"] == f"run-failure-{result.run_id}"
    assert delivered["details"] == {"job": "doomed_job"}
    assert delivered["links"]["dagster_run"] == f"http://127.0.0.1:3000/runs/{result.run_id}"
    assert delivered["text"].startswith("Run Failed — job doomed_job run ")
