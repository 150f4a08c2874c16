"""The backend for a `url.RemoteConfig`: the one place that knows which class serves which kind.

Apart from the URL model so that neither imports the other's dependencies: parsing a URL never
imports a backend, and a backend never imports this module. boto3/botocore are imported only
when an ``s3`` config is opened. Opening sends nothing: a backend connects on its first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pageserver_operator.remote import url

if TYPE_CHECKING:
    from pageserver_operator.remote import base


def open_remote(config: url.RemoteConfig) -> base.RemoteStorage:
    """Create the backend for ``config`` (boto3 is imported only for S3)."""
    if config.kind == "local":
        from pageserver_operator.remote import local_fs

        assert config.local_path is not None  # checked by RemoteConfig
        return local_fs.LocalFsStorage(config.local_path, config.concurrency)
    from pageserver_operator.remote.s3 import storage as s3_storage

    return s3_storage.S3Storage(config)
