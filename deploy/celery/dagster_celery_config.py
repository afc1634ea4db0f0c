"""Settings of every Celery worker of the study-workers cluster.

``celery -A dagster_celery.app worker`` (what ``dagster-celery worker start`` runs) builds its app
from ``dagster_celery.defaults`` and then this module, found on ``PYTHONPATH``
(``PYTHONPATH=deploy/celery``). The broker and result URLs come from the environment, so no file
holds the password. The run side takes the same settings from ``deploy/executors/celery.yaml``
(``execution.config.config_source``); ``tests/celery`` checks the two agree. Why each is set:
deploy/WORKERS.md, "Celery settings".
"""

import os

broker_url = os.environ["DAGSTER_CELERY_BROKER_URL"]
result_backend = os.environ["DAGSTER_CELERY_BACKEND_URL"]

worker_prefetch_multiplier = 1
task_acks_late = True
task_reject_on_worker_lost = True
broker_transport_options = {"visibility_timeout": 43200}
result_backend_always_retry = True
result_backend_max_retries = 30
broker_connection_retry_on_startup = True
worker_cancel_long_running_tasks_on_connection_loss = False
