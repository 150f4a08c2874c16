"""The ``s3://`` backend, one concept per module.

- `storage`: `storage.S3Storage`, the `base.RemoteStorage` operations (listing, GET, PUT,
  DELETE) under one concurrency limit and one retry layer.
- `ranged`: a large object as parallel ranged GETs, each part at its offset (for `storage`).
- `errors`: the tables and the function that classify a failure as `NotFound`, transient or
  permanent (and the size-mismatch message).
- `client`: building the botocore client (pool, timeouts, no botocore retries) and the direct
  path for an endpoint.
- `streams`: a GET's body, from botocore or from the direct path, copied to the caller's file.
- `direct`: the hand-written HTTP/1.1 transfer path (SigV4, keep-alive, ``sendfile``). Only
  `client` builds it and only `storage`, `ranged` and `streams` call it: dropping it means
  deleting this module and its uses there.

Nothing is imported here, so ``import pageserver_operator.remote.s3.storage`` is the one way in.
"""
