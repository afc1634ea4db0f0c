"""Run failures notify a webhook; asset freshness shows in the UI as checks.

The webhook URL often carries a token (Slack, Teams), so it comes from the environment
(``FFE_WEBHOOK_URL`` through ``EnvVar``) and never appears in logs, metadata or errors.
"""

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from dagster import (
    AssetChecksDefinition,
    AssetKey,
    ConfigurableResource,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SkipReason,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
    run_failure_sensor,
)

from ffe_dagster.triggers import run_trigger

WEBHOOK_TIMEOUT_S = 10.0


class WebhookError(RuntimeError):
    """A notification could not be delivered (the URL is never part of the message)."""


class WebhookResource(ConfigurableResource):
    """Where failure notifications go: an HTTP(S) endpoint that accepts a JSON POST.

    An empty URL switches notifications off.
    """

    url: str = ""

    @property
    def enabled(self) -> bool:
        """True when a URL is configured."""
        return bool(self.url.strip())

    def post(self, payload: Mapping[str, Any]) -> int:
        """POST ``payload`` as JSON; returns the HTTP status, raises ``WebhookError`` otherwise."""
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"webhook answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookError(f"webhook unreachable: {type(reason).__name__}") from None


def failure_payload(context: RunFailureSensorContext) -> dict[str, Any]:
    """What a failure notification says: job, run, tags that explain the trigger, the error."""
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    return {
        "event": "run_failure",
        "job": run.job_name,
        "run_id": run.run_id,
        "trigger": run_trigger(run.tags),
        "error": error[:2000],
    }


def build_failure_sensor() -> SensorDefinition:
    """A run-failure sensor that posts each failed run of this code location to the webhook."""

    @run_failure_sensor(
        name="run_failure_webhook",
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts every failed run (job, run id, trigger, error) to FFE_WEBHOOK_URL.",
    )
    def run_failure_webhook(
        context: RunFailureSensorContext, webhook: WebhookResource
    ) -> SkipReason | None:
        if not webhook.enabled:
            return SkipReason("FFE_WEBHOOK_URL is not set: failure notifications are off")
        payload = failure_payload(context)
        status = webhook.post(payload)
        context.log.info(f"notified webhook of failed run {payload['run_id']} (HTTP {status})")
        return None

    return run_failure_webhook


def build_freshness(
    asset_keys: Sequence[str], cycle_interval: timedelta
) -> tuple[list[AssetChecksDefinition], SensorDefinition]:
    """Freshness checks (shown on each asset in the UI) and the sensor that evaluates them.

    An asset is stale when it was not updated within one cycle interval plus an hour of grace.
    """
    checks = list(
        build_last_update_freshness_checks(
            assets=[AssetKey(k) for k in asset_keys],
            lower_bound_delta=cycle_interval + timedelta(hours=1),
        )
    )
    sensor = build_sensor_for_freshness_checks(
        freshness_checks=checks,
        name="freshness_checks_sensor",
        minimum_interval_seconds=600,
        default_status=DefaultSensorStatus.RUNNING,
    )
    return checks, sensor
