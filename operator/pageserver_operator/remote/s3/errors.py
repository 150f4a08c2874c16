"""How a failure of a boto3/botocore/urllib3 request (or of the obstore data path, `s3.transfer`) becomes a
`remote.errors` error: `NotFound`, transient (retried) or permanent.

Error mapping: ``NoSuchKey``/404 is `NotFound`; ``NoSuchBucket``, ``AccessDenied``,
``InvalidAccessKeyId``, ``SignatureDoesNotMatch`` and other 4xx are `PermanentRemoteError`
naming the bucket, the key and the S3 error code; 5xx, 429, ``SlowDown``, ``RequestTimeout``,
throttling and connection-level failures (refused, reset, timed out, truncated body) are
transient.
Credentials are never put into messages.

Also the two messages about an object the backends share: `where` names it, `size_mismatch`
says it is not the size the caller expects.

Pure classification: no I/O, no state.
"""

from __future__ import annotations

import functools
import http.client
import re
import sys

import obstore.exceptions

from pageserver_operator.remote import errors

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
        "IncompleteBody",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
    }
)
#: Failures without an answer that need no botocore to exist: worth another attempt.
_BUILTIN_TRANSIENT: tuple[type[BaseException], ...] = (
    http.client.HTTPException,  # IncompleteRead
    ConnectionError,
    TimeoutError,
)


@functools.cache
def transient_exceptions() -> tuple[type[BaseException], ...]:
    """Errors of the connection or of the response stream: worth another attempt. botocore's
    and urllib3's are imported on the first call (a backend on the obstore path may never need
    them: botocore costs a CLI run ~150 ms of start-up)."""
    import botocore.exceptions
    import urllib3.exceptions

    return (
        botocore.exceptions.HTTPClientError,  # ReadTimeout, ConnectionClosed, ResponseStreaming
        botocore.exceptions.ConnectionError,  # EndpointConnection, ConnectTimeout, Proxy, SSL
        botocore.exceptions.IncompleteReadError,
        botocore.exceptions.ChecksumError,
        botocore.exceptions.FlexibleChecksumError,
        botocore.exceptions.CredentialRetrievalError,
        botocore.exceptions.MetadataRetrievalError,
        urllib3.exceptions.HTTPError,  # ProtocolError and friends, when not wrapped by botocore
        *_BUILTIN_TRANSIENT,
    )


@functools.cache
def remote_exceptions() -> tuple[type[BaseException], ...]:
    """Everything a botocore request or body read can raise that `map_error` classifies."""
    import botocore.exceptions

    return (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, *transient_exceptions())


def map_error(
    exc: BaseException, *, op: str, bucket: str, full_key: str, endpoint: str | None = None
) -> errors.RemoteError:
    """Classify a boto3/botocore/urllib3 failure as `NotFound`, transient or permanent."""
    import botocore.exceptions

    where = f"s3://{bucket}/{full_key}"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        text = str(error.get("Message") or "").strip()
        return classify_answer(op, bucket, full_key, status, code, text)
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return no_credentials(op, where)
    if isinstance(exc, transient_exceptions()):
        server = f" at {endpoint}" if endpoint else ""
        return errors.TransientRemoteError(f"{op} of {where}{server} failed: {type(exc).__name__}: {exc}")
    return errors.PermanentRemoteError(f"{op} of {where} failed: {type(exc).__name__}: {exc}")


def classify_answer(
    op: str, bucket: str, full_key: str, status: int, code: str, text: str
) -> errors.RemoteError:
    """An S3 error answer (HTTP ``status``, S3 error ``code`` and message ``text``) as `NotFound`,
    transient or permanent: the one table for botocore's and obstore's answers."""
    where = f"s3://{bucket}/{full_key}"
    detail = f"{code or 'error'} (HTTP {status})" + (f": {text}" if text else "")
    if code == "NoSuchBucket":
        return errors.PermanentRemoteError(
            f"{op} of {where} failed: bucket {bucket!r} does not exist ({detail})"
        )
    if code in NOT_FOUND_CODES or status == 404:
        return errors.NotFound(f"no object {where} ({code or 'HTTP 404'})")
    if code in TRANSIENT_CODES or status == 429 or status >= 500:
        return errors.TransientRemoteError(f"{op} of {where} failed: {detail}")
    return errors.PermanentRemoteError(f"{op} of {where} rejected: {detail}")


def no_credentials(op: str, where: str) -> errors.PermanentRemoteError:
    return errors.PermanentRemoteError(
        f"{op} of {where}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(or use IRSA / an instance profile)"
    )


#: botocore's errors for no credentials (or half of them).
_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError"})

#: obstore's message for an error answer: "... Server returned non-2xx status code: 503 Service
#: Unavailable: <body>"; the body of an S3 error is XML with <Code> and <Message>.
_OBSTORE_STATUS = re.compile(r"non-2xx status code: (\d{3})")
_XML_CODE = re.compile(r"<Code>([^<]{1,200})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{0,500})</Message>")


def map_obstore_error(
    exc: BaseException, *, op: str, bucket: str, full_key: str, endpoint: str | None = None
) -> errors.RemoteError:
    """Classify a failure of the obstore data path (`s3.transfer`) like botocore's.

    An error answer is classified by its status code and S3 error code (`classify_answer`), the
    same table as botocore's; obstore states both only in its message, so they are read from it.
    A failure with no answer (connect, reset, timeout, a body cut short, credentials that could
    not be fetched) is transient, no credentials at all is permanent (as botocore's); anything
    else obstore raises (an invalid path, an unsupported request) is permanent."""
    where = f"s3://{bucket}/{full_key}"
    if type(exc).__name__ in _NO_CREDENTIALS:  # botocore's, from its chain: by name, not imported
        return no_credentials(op, where)
    message = str(exc)
    status_match = _OBSTORE_STATUS.search(message)
    if status_match is not None:
        code_match = _XML_CODE.search(message)
        text_match = _XML_MESSAGE.search(message)
        return classify_answer(
            op,
            bucket,
            full_key,
            int(status_match.group(1)),
            code_match.group(1) if code_match else "",
            text_match.group(1).strip() if text_match else "",
        )
    first_line = message.split("\n\nDebug source:", 1)[0].strip()
    if "External AWS credential provider" in message:  # botocore's chain, called by obstore
        if "NoCredentialsError" in message or "PartialCredentialsError" in message:
            return no_credentials(op, where)
        return errors.TransientRemoteError(f"{op} of {where}: fetching credentials failed: {first_line}")
    # botocore's own errors can only be there if botocore was imported (its credential chain)
    botocore_transient = transient_exceptions() if "botocore" in sys.modules else ()
    if isinstance(exc, (obstore.exceptions.GenericError, *_BUILTIN_TRANSIENT, *botocore_transient)):
        server = f" at {endpoint}" if endpoint else ""
        return errors.TransientRemoteError(
            f"{op} of {where}{server} failed: {type(exc).__name__}: {first_line}"
        )
    if isinstance(exc, (obstore.exceptions.NotFoundError, FileNotFoundError)):
        return errors.NotFound(f"no object {where} (HTTP 404)")
    return errors.PermanentRemoteError(f"{op} of {where} failed: {type(exc).__name__}: {first_line}")


def where(bucket: str, full_key: str) -> str:
    """An object's name in messages: ``s3://bucket/key``."""
    return f"s3://{bucket}/{full_key}"


def size_mismatch(bucket: str, full_key: str, expected: int, got: int) -> errors.PermanentRemoteError:
    """An object whose size differs from the one the caller expects (the index's): permanent."""
    return errors.PermanentRemoteError(
        f"size mismatch for {where(bucket, full_key)}: expected {expected} bytes, got {got}"
    )
