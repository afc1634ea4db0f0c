"""The notification outbox on PostgreSQL (production mode): decisions enqueue in their own
transaction, a receiver that is down and then back gets each notification once, and a row
claimed by one deliverer is not handed to another."""

from datetime import UTC, datetime, timedelta

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.reporting.notifications import UiLinks
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.webhook import WebhookResource
from ffe_dagster.sensors.notify import DeliveryPolicy, deliver_due
from tests.fakes.receiver import WebhookReceiver

LINKS = UiLinks(dagster="http://127.0.0.1:3000", mlflow="http://127.0.0.1:5000")


def test_the_outbox_delivers_once_after_an_outage(postgres_url: str) -> None:
    registry = ParameterRegistryResource(url=postgres_url)
    for n in (1, 2):
        registry.record(
            regime="BEAR",
            level=2,
            params={"stop_loss_pct": float(n)},
            metrics={"sharpe": 1.0},
            stage=Stage.FULL,
            promoted=True,
            reason=f"import {n}",
            trigger="manual",
            run_id=f"run-{n}",
        )
    registry.rollback("BEAR", reason="operator", trigger="manual", run_id="run-3")
    outbox = registry.outbox()
    now = datetime.now(UTC)
    lease = timedelta(minutes=2)
    claimed = next(outbox.claim_due(now, lease=lease))
    assert claimed.id not in [d.id for d in outbox.claim_due(now, lease=lease)]

    receiver = WebhookReceiver().start()
    receiver.stop()
    webhook = WebhookResource(url=receiver.url)
    later = now + lease + timedelta(seconds=1)  # the claim above has lapsed
    assert deliver_due(outbox, webhook, LINKS, later, DeliveryPolicy()).failed == 1
    receiver.start()
    try:
        done = deliver_due(outbox, webhook, LINKS, later + timedelta(hours=2), DeliveryPolicy())
        again = deliver_due(outbox, webhook, LINKS, later + timedelta(hours=3), DeliveryPolicy())
    finally:
        receiver.stop()
    assert (done.sent, again.sent) == (3, 0)
    kinds = [r.json["kind"] for r in receiver.accepted()]
    assert kinds == ["promote", "promote", "rollback"]
    assert len({r.key for r in receiver.accepted()}) == 3
    counts = outbox.counts()
    assert (counts.sent, counts.pending, counts.retried, counts.failed) == (3, 0, 1, 1)
    assert all(a["at"].tzinfo is not None for a in outbox.attempts())
