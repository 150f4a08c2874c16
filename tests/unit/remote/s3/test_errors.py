"""Tests of `remote.s3.errors`: every kind of boto3/botocore/urllib3 failure is classified as
`NotFound`, transient or permanent, and the message names the object."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest
import urllib3.exceptions

from pageserver_operator.remote import errors
from pageserver_operator.remote.s3 import errors as s3_errors


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://h"), errors.TransientRemoteError),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://h"), errors.TransientRemoteError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://h"), errors.TransientRemoteError),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://h"), errors.TransientRemoteError),
        (
            botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
            errors.TransientRemoteError,
        ),
        (urllib3.exceptions.ProtocolError("Connection broken"), errors.TransientRemoteError),
        (ConnectionResetError(104, "reset"), errors.TransientRemoteError),
        (botocore.exceptions.NoCredentialsError(), errors.PermanentRemoteError),
        (botocore.exceptions.ParamValidationError(report="bad"), errors.PermanentRemoteError),
    ],
)
def test_map_error_of_client_side_failures(exc: BaseException, kind: type[errors.RemoteError]) -> None:
    mapped = s3_errors.map_error(exc, op="get", bucket="b", full_key="p/k")
    assert type(mapped) is kind
    assert "s3://b/p/k" in str(mapped)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, errors.NotFound),
        ("404", 404, errors.NotFound),
        ("", 404, errors.NotFound),
        ("NoSuchBucket", 404, errors.PermanentRemoteError),
        ("AccessDenied", 403, errors.PermanentRemoteError),
        ("", 403, errors.PermanentRemoteError),
        ("InvalidRequest", 400, errors.PermanentRemoteError),
        ("SlowDown", 503, errors.TransientRemoteError),
        ("", 502, errors.TransientRemoteError),
        ("Throttling", 400, errors.TransientRemoteError),
        ("RequestTimeout", 400, errors.TransientRemoteError),
    ],
)
def test_map_error_of_s3_responses(code: str, status: int, kind: type[errors.RemoteError]) -> None:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    exc = botocore.exceptions.ClientError(response, "GetObject")
    assert type(s3_errors.map_error(exc, op="get", bucket="b", full_key="k")) is kind
