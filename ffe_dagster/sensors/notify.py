"""Delivery of the notification outbox: a sensor posts every due notification to the webhook,
retries with exponential backoff, records each attempt, and shows the counts in the UI.

A tick in which an attempt failed fails (red in the Dagster UI, with the reason and how many
wait), after recording the attempts and the counts: a notification that cannot be delivered is
loud, and it stays in the outbox until the endpoint answers.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSpec,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from ffe_dagster.config.settings import WEBHOOK_ENV
from ffe_dagster.core.reporting.notifications import (
    DeliveryCounts,
    UiLinks,
    delivered_payload,
    retry_delay_s,
)
from ffe_dagster.resources.outbox import Outbox
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.webhook import WebhookError, WebhookResource

OUTBOX_ASSET = AssetKey("notification_outbox")


class NotificationDeliveryError(RuntimeError):
    """Notifications could not be delivered this tick; they stay in the outbox."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How delivery retries: the first retry after ``retry_base_s``, doubling up to
    ``retry_cap_s``; a claimed row is held for ``lease_s`` (longer than one POST may take)."""

    retry_base_s: float = 30.0
    retry_cap_s: float = 3600.0
    lease_s: float = 120.0
    per_tick: int = 50


@dataclass(frozen=True, slots=True)
class DeliveryRound:
    """What one pass over the due notifications did."""

    sent: int
    failed: int
    error: str | None  # the failure that stopped the pass (never holds the URL)


def deliver_due(
    outbox: Outbox,
    webhook: WebhookResource,
    links: UiLinks,
    now: datetime,
    policy: DeliveryPolicy,
) -> DeliveryRound:
    """Post the due notifications oldest first, each with its idempotency key. The first
    failure ends the pass: the endpoint is likely down, and the rest are due next tick."""
    sent = 0
    for due in outbox.claim_due(
        now, lease=timedelta(seconds=policy.lease_s), limit=policy.per_tick
    ):
        try:
            status = webhook.post(delivered_payload(due.payload, links), key=due.key)
        except WebhookError as exc:
            delay = retry_delay_s(
                due.attempts + 1, base_s=policy.retry_base_s, cap_s=policy.retry_cap_s
            )
            outbox.record(
                due,
                at=now,
                ok=False,
                http_status=exc.http_status,
                error=str(exc),
                retry_in=timedelta(seconds=delay),
            )
            return DeliveryRound(sent, 1, f"{exc} (next attempt in {delay:g} s)")
        outbox.record(due, at=now, ok=True, http_status=status, error=None, retry_in=timedelta())
        sent += 1
    return DeliveryRound(sent, 0, None)


def outbox_asset_spec() -> AssetSpec:
    """The outbox as an observable asset, so the delivery counts show on its page in the UI."""
    return AssetSpec(
        OUTBOX_ASSET,
        group_name="promotion",
        kinds={"sql"},
        description="Notifications of promotions, rejections, rollbacks, suspensions, level "
        "verdict changes and failed runs, waiting for or after delivery to FFE_WEBHOOK_URL. "
        "Each observation holds the delivery counts (sent, pending, retried, failed).",
    )


def observe_counts(counts: DeliveryCounts, outbox: Outbox, note: str) -> AssetObservation:
    """The counts as an observation of ``notification_outbox``."""
    oldest = outbox.oldest_pending()
    metadata: dict[str, MetadataValue | int | str] = {
        "sent": counts.sent,
        "pending": counts.pending,
        "retried": counts.retried,
        "failed": counts.failed,
        "last_tick": note,
    }
    if oldest is not None:
        metadata["oldest_pending_since"] = oldest[0].isoformat()
        metadata["last_error"] = oldest[1] or "not tried yet"
    return AssetObservation(asset_key=OUTBOX_ASSET, metadata=metadata)


def deliver_and_report(
    instance: DagsterInstance | None,
    registry: ParameterRegistryResource,
    webhook: WebhookResource,
    links: UiLinks,
    policy: DeliveryPolicy,
    now: datetime | None = None,
) -> str:
    """One delivery pass, its counts observed on the outbox asset (when a Dagster instance is
    given); raises ``NotificationDeliveryError`` after recording when an attempt failed."""
    outbox = registry.outbox()
    if not webhook.enabled:
        note = f"{WEBHOOK_ENV} is not set: notifications wait in the outbox"
        result = DeliveryRound(0, 0, None)
    else:
        result = deliver_due(outbox, webhook, links, now or datetime.now(UTC), policy)
        note = f"sent {result.sent}" + (f"; failed: {result.error}" if result.error else "")
    counts = outbox.counts()
    if instance is not None:
        instance.report_runless_asset_event(observe_counts(counts, outbox, note))
    if result.error is not None:
        raise NotificationDeliveryError(
            f"notification delivery failed: {result.error}; {counts.pending} notification(s) "
            "wait in the outbox and are retried with backoff"
        )
    return f"{note}; {counts.pending} pending, {counts.sent} sent in all"


def build_notify_sensor(links: UiLinks, policy: DeliveryPolicy | None = None) -> SensorDefinition:
    """The sensor that delivers the outbox every 30 seconds."""
    policy = policy or DeliveryPolicy()

    @sensor(
        name="notification_delivery",
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts every pending notification (promotions, rejections, rollbacks, "
        "suspensions, level verdict changes, failed runs) to FFE_WEBHOOK_URL with its "
        "Idempotency-Key; retries with exponential backoff; counts on notification_outbox.",
    )
    def notification_delivery(
        context: SensorEvaluationContext,
        registry: ParameterRegistryResource,
        webhook: WebhookResource,
    ) -> SkipReason:
        return SkipReason(deliver_and_report(context.instance, registry, webhook, links, policy))

    return notification_delivery
