"""The ``s3://`` backend, one concept per module.

- `storage`: `storage.S3Storage`, the `base.RemoteStorage` operations (listing, GET, PUT,
  DELETE) under one concurrency limit and one retry layer.
- `ranged`: a large object as parallel ranged GETs, each part at its offset (for `storage`).
- `errors`: the tables and the function that classify a failure as `NotFound`, transient or
  permanent (and the size-mismatch message).
- `client`: building the botocore client (pool, timeouts, no botocore retries) and the obstore
  data path.
- `streams`: a GET's body, from botocore or from obstore, copied to the caller's file.
- `transfer`: the requests through obstore (issue 19's decision, docs/performance.md).
  Only `client` builds it and only `storage`, `ranged` and `streams` call it.

Nothing is imported here, so ``import pageserver_operator.remote.s3.storage`` is the one way in.
"""
