"""Shared plumbing of the AWS adapters (rekognition.py, s3.py): boto3 clients and one error policy.

Errors (both services)
----------------------
botocore is built with ``total_max_attempts=1``: the pipeline owns retries. (Note that
``retries={"max_attempts": 1}`` means ONE RETRY in botocore: ``max_attempts`` does not count the
first request.) Throttling (ThrottlingException, ProvisionedThroughputExceeded, LimitExceeded,
SlowDown, HTTP 429), 5xx, InternalServerError/ServiceUnavailable, timeouts, connection errors and
unreadable replies -> TransientStepError (``retry_after`` from ``Retry-After``). Image errors,
credential errors ("check the AWS credentials"), AccessDenied/NoSuchBucket (with the bucket
name) and other 4xx -> PermanentStepError. Messages quote AWS's code, HTTP status and reason
(<= 300 chars, credentials redacted); for credential errors the reason is not quoted at all,
since S3 echoes the access key id and the string it signed.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.parsers import ResponseParserError

from pipeline.kernel.config import env_number
from pipeline.kernel.errors import PermanentStepError, StepError, TransientStepError, retry_after_seconds
from pipeline.providers.base import RequestHooks

T = TypeVar("T")

REKOGNITION = "rekognition"  # provider name for hooks and metrics
S3 = "s3"

DEFAULT_REGION = "us-east-1"
DEFAULT_TIMEOUT = 30.0
MAX_CONNECT_TIMEOUT = 10.0  # a TCP connect slower than this is a dead route, not a slow answer
REASON_CHARS = 300

_THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "ProvisionedThroughputExceededException",
    "LimitExceededException", "RequestLimitExceeded", "TooManyRequestsException", "SlowDown",
    "RequestThrottled", "RequestThrottledException", "BandwidthLimitExceeded",
})
_SERVER_CODES = frozenset({
    "InternalServerError", "InternalError", "InternalFailure", "ServiceUnavailable",
    "ServiceUnavailableException", "ServiceFailure", "RequestTimeout", "RequestTimeoutException",
})
CREDENTIAL_CODES = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken",
    "ExpiredTokenException", "MissingAuthenticationToken", "MissingAuthenticationTokenException",
    "IncompleteSignature", "IncompleteSignatureException", "InvalidToken", "TokenRefreshRequired",
    "AuthFailure", "RequestExpired", "RequestTimeTooSkewed",
})
MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
CREDENTIAL_HINT = (
    "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the "
    "instance role) and their permissions"
)

# Access key ids, SigV4 signatures and session tokens in presigned query strings.
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
_SIGNED = re.compile(r"(?i)(signature|x-amz-security-token|x-amz-credential|credential)=[^\s&,\"']+")


# --- configuration ------------------------------------------------------------------------------


def make_client(service: str, env: Mapping[str, str] | None = None) -> Any:
    """A boto3 client with retries off and per-request timeouts, from the environment.

    ``AWS_REGION``/``AWS_DEFAULT_REGION`` (default us-east-1), ``AWS_ENDPOINT_URL_<SERVICE>`` then
    ``AWS_ENDPOINT_URL`` (a fake, LocalStack, MinIO), ``AWS_TIMEOUT`` seconds (default 30),
    ``S3_ADDRESSING_STYLE`` (auto/path/virtual). Credentials: boto3's own chain.
    """
    e = os.environ if env is None else env
    region = e.get("AWS_REGION", "").strip() or e.get("AWS_DEFAULT_REGION", "").strip() or DEFAULT_REGION
    # The service-specific variable wins, as boto3 itself does when endpoint_url is not passed.
    endpoint = (e.get(f"AWS_ENDPOINT_URL_{service.upper()}", "").strip()
                or e.get("AWS_ENDPOINT_URL", "").strip() or None)
    timeout = env_number(e, "AWS_TIMEOUT", DEFAULT_TIMEOUT, 0.05, 3600.0)
    style = e.get("S3_ADDRESSING_STYLE", "").strip().lower() or "auto"
    if style not in ("auto", "path", "virtual"):
        raise SystemExit(f"configuration error: S3_ADDRESSING_STYLE must be auto, path or virtual (got {style[:20]!r})")
    config = botocore.config.Config(
        # total_max_attempts=1: no botocore retry at all ("max_attempts" would still retry once).
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(timeout, MAX_CONNECT_TIMEOUT),
        read_timeout=timeout,
        s3={"addressing_style": style},
        # Presigned S3 URLs: SigV4 (botocore may still presign with the deprecated SigV2).
        signature_version="s3v4" if service == S3 else None,
    )
    # One Session per client: sessions are not thread-safe, clients are.
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint, config=config)


# --- errors -------------------------------------------------------------------------------------


def _redact(text: str) -> str:
    """``text`` without credentials: the configured values themselves, key ids, signatures."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "[redacted]")
    text = _KEY_ID.sub("[redacted]", text)
    return _SIGNED.sub(lambda m: f"{m.group(1)}=[redacted]", text)


def reason(text: object) -> str:
    """``text`` on one line, credentials redacted, at most ``REASON_CHARS`` (300) characters."""
    one_line = " ".join(str(text).split())
    return _redact(one_line)[:REASON_CHARS]




def _hint(headers: Mapping[str, str]) -> float | None:
    return retry_after_seconds(headers.get("retry-after") or headers.get("Retry-After"))


class Malformed(ValueError):
    """A 2xx reply whose body is not what the API documents (a flaky gateway, a cut body)."""


_UNREADABLE = (Malformed, ResponseParserError, KeyError, TypeError, ValueError, AttributeError)


def client_error_parts(exc: ClientError) -> tuple[str, int, str, Mapping[str, str]]:
    """(AWS error code, HTTP status, AWS's message, response headers) of a botocore ClientError;
    the code falls back to the status (HEAD errors have no body) or "Unknown"."""
    error = exc.response.get("Error") or {}
    meta = exc.response.get("ResponseMetadata") or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status or "Unknown")
    return code, status, str(error.get("Message") or ""), meta.get("HTTPHeaders") or {}


def _transport_error(exc: BotoCoreError, service: str, op: str) -> tuple[str, StepError]:
    """(hooks outcome, error) for what botocore raises before or instead of an HTTP answer."""
    what = f"{service} {op}"
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return "timeout", TransientStepError(f"{what} timed out ({type(exc).__name__}); will retry.")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | HTTPClientError
                  | ResponseStreamingError | IncompleteReadError):
        return "connection_error", TransientStepError(
            f"{what} failed: connection problem ({type(exc).__name__}: {reason(exc)}); will retry.")
    if isinstance(exc, FlexibleChecksumError):
        return "malformed", TransientStepError(f"{what}: the reply failed its checksum; will retry.")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return "client_error", PermanentStepError(
            f"{what} could not be called: no usable AWS credentials were found; {CREDENTIAL_HINT}.")
    if isinstance(exc, ParamValidationError):
        return "client_error", PermanentStepError(f"{what} was refused before sending: {reason(exc)}")
    # Anything else from botocore is configuration (no region, unknown endpoint...): fix, not retry.
    return "client_error", PermanentStepError(f"{what} could not be called: {type(exc).__name__}: {reason(exc)}")


def _service_error(exc: ClientError, service: str, op: str) -> tuple[str, StepError]:
    """(hooks outcome, error) for an error answer that has no more specific meaning."""
    code, status, message, headers = client_error_parts(exc)
    said = f"{code}, HTTP {status}" + (f": {reason(message)}" if message else "")
    if code in _THROTTLE_CODES or status == 429:
        return "throttled", TransientStepError(
            f"{service} is throttling requests ({said}); will retry.", retry_after=_hint(headers))
    if code in _SERVER_CODES or status >= 500:
        return "server_error", TransientStepError(
            f"{service} had a server error ({said}); will retry.", retry_after=_hint(headers))
    if code in CREDENTIAL_CODES:
        # No reason quoted: S3's SignatureDoesNotMatch echoes the key id and the signed string.
        return "client_error", PermanentStepError(
            f"{service} refused our credentials ({code}, HTTP {status}): {CREDENTIAL_HINT}.")
    return "client_error", PermanentStepError(f"{service} refused the request {op} ({said}).")


def call(
    hooks: RequestHooks,
    provider: str,
    service: str,
    op: str,
    send: Callable[[], Any],
    parse: Callable[[Any], T],
    on_error: Callable[[ClientError], tuple[str, StepError] | None] | None = None,
) -> T:
    """One request with hooks around it; every botocore failure becomes a StepError.

    ``on_error`` may give a more specific meaning to an error answer (NoSuchKey, an image
    error); None falls back to the generic mapping.
    """
    hooks.before(provider, op)  # may raise TransientStepError (shared quota spent): propagate
    started = time.monotonic()
    outcome = "ok"
    try:
        return parse(send())
    except ClientError as exc:
        mapped = on_error(exc) if on_error is not None else None
        outcome, error = mapped if mapped is not None else _service_error(exc, service, op)
        # from None: botocore's exception text may carry what _redact removed.
        raise error from None
    except BotoCoreError as exc:  # before _UNREADABLE: a few of these are also ValueErrors
        outcome, error = _transport_error(exc, service, op)
        raise error from None
    except _UNREADABLE as exc:
        # botocore's own parser fails on a body of the wrong shape (a string where the model
        # says object...) with plain AttributeError/TypeError, so those count as malformed too.
        outcome = "malformed"
        raise TransientStepError(
            f"{service} {op} sent a reply we could not read ({type(exc).__name__}: {reason(exc)}); will retry."
        ) from None
    finally:
        hooks.after(provider, op, outcome, time.monotonic() - started)
