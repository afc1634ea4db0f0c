"""Run failures notify the webhook (through the notification outbox); asset freshness shows in
the UI through freshness policies on the assets.

The webhook URL often carries a token (Slack, Teams), so it comes from the environment
(``FFE_WEBHOOK_URL`` through ``EnvVar``) and never appears in logs, metadata or errors.
"""

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetsDefinition,
    DefaultSensorStatus,
    FreshnessPolicy,
    RunFailureSensorContext,
    SensorDefinition,
    SkipReason,
    apply_freshness_policy,
    run_failure_sensor,
)

from ffe_dagster.config.settings import WEBHOOK_ENV
from ffe_dagster.core.reporting.notifications import Notification, UiLinks, run_failure_notification
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.webhook import WebhookResource
from ffe_dagster.sensors.notify import DeliveryPolicy, deliver_and_report
from ffe_dagster.triggers import run_trigger


def failure_notification(context: RunFailureSensorContext) -> Notification:
    """What a failure notification says: job, run, the trigger tag, the error."""
    run = context.dagster_run
    return run_failure_notification(
        job=run.job_name,
        run_id=run.run_id,
        trigger=run_trigger(run.tags),
        error=context.failure_event.message or "run failed",
        at=datetime.now(UTC),
    )


def build_failure_sensor(links: UiLinks, policy: DeliveryPolicy | None = None) -> SensorDefinition:
    """A run-failure sensor: each failed run of this code location goes into the notification
    outbox (keyed by its run id, so at most once) and is delivered at once; when the webhook
    does not take it, the tick fails and the delivery sensor retries it."""
    policy = policy or DeliveryPolicy()

    @run_failure_sensor(
        name="run_failure_webhook",
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts every failed run (job, run id, trigger, error) to FFE_WEBHOOK_URL "
        "through the notification outbox (retried until delivered).",
    )
    def run_failure_webhook(
        context: RunFailureSensorContext,
        registry: ParameterRegistryResource,
        webhook: WebhookResource,
    ) -> SkipReason | None:
        notification = failure_notification(context)
        registry.outbox().add(notification)
        if not webhook.enabled:
            return SkipReason(f"{WEBHOOK_ENV} is not set: the failure waits in the outbox")
        summary = deliver_and_report(context.instance, registry, webhook, links, policy)
        context.log.info(f"failed run {notification.run_id}: {summary}")
        return None

    return run_failure_webhook


def with_freshness(
    assets: AssetsDefinition, asset_keys: Collection[str], cycle_interval: timedelta
) -> AssetsDefinition:
    """``assets`` with a freshness policy on each of its keys named in ``asset_keys`` (the UI
    shows each asset fresh or failing; the instance evaluates it, no sensor is needed).

    An asset fails freshness when it was not updated within one cycle interval plus an hour of
    grace.
    """
    policy = FreshnessPolicy.time_window(fail_window=cycle_interval + timedelta(hours=1))
    return assets.map_asset_specs(
        lambda spec: (
            apply_freshness_policy(spec, policy)
            if spec.key.to_user_string() in asset_keys
            else spec
        )
    )
