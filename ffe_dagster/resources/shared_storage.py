"""The IO manager of a cluster: op outputs pickled into a folder every worker machine mounts.

Dagster's default IO manager writes under ``$DAGSTER_HOME/storage`` of the machine that ran the
step, and a Celery step on another machine reads it from the path *the run's* instance gave, so a
cross-machine run needs storage every worker reads. By default that is a shared folder (NFS, EFS,
SMB, ...); ``FilesystemIOManager`` builds each output's path from its ``base_dir``, the run id, the
step and the output name, so each machine may mount the folder at its own path, named by its own
``FFE_SHARED_DIR``. Object storage instead: bind ``dagster_aws.s3.S3PickleIOManager`` (or
``dagster_gcp``'s GCS one) as ``io_manager`` (deploy/WORKERS.md).
"""

from dagster import EnvVar, FilesystemIOManager

SHARED_DIR_ENV = "FFE_SHARED_DIR"


def shared_folder_io_manager(base_dir: str | EnvVar) -> FilesystemIOManager:
    """Pickles every op output under ``base_dir`` (a folder all worker machines mount)."""
    return FilesystemIOManager(base_dir=base_dir)
