"""Amazon S3 through boto3: ``S3Objects`` reads uploaded photos from any bucket, ``S3Storage`` is
the output storage (generated images and books) on one bucket.

Requests, timeouts and the error policy are shared with Rekognition (pipeline/providers/aws.py);
API: GetObject, PutObject, HeadObject and SigV4 presigned GET URLs
(https://docs.aws.amazon.com/AmazonS3/latest/API/). botocore's own retries are off
(``total_max_attempts=1``): the step layer retries, so nothing here retries either.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from pipeline.kernel.errors import PermanentStepError, StepError
from pipeline.kernel.storage import ObjectMissing, StorageUnavailable, check_key, check_prefix, presigned_url_seconds
from pipeline.providers.aws import (
    CREDENTIAL_CODES,
    CREDENTIAL_HINT,
    MISSING_CODES,
    S3,
    call,
    client_error_parts,
    make_client,
)
from pipeline.providers.base import NoHooks, RequestHooks

T = TypeVar("T")

MAX_PHOTO_BYTES = 50 * 1024 * 1024  # read_object: an upload larger than this is refused unread
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer


def _normalise_prefix(prefix: str) -> str:
    cleaned = prefix.strip().strip("/")
    return f"{check_key(cleaned)}/" if cleaned else ""


class S3Objects:
    """Reads objects from any bucket: the uploaded photo, whose row names its own bucket.

    Usable without an output bucket (photos in S3, generated files stored locally).
    """

    def __init__(self, client: Any = None, hooks: RequestHooks | None = None) -> None:
        self.client = client if client is not None else make_client(S3)
        self.hooks: RequestHooks = hooks if hooks is not None else NoHooks()

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> S3Objects:
        """A reader with the AWS variables' client (``make_client``)."""
        return cls(client=make_client(S3, env), hooks=hooks)

    def read_object(self, bucket: str, key: str) -> bytes:
        """The photo at ``photos.bucket`` + ``photos.object_key`` (no prefix is applied)."""
        if not bucket:
            raise PermanentStepError("The photo's row has no bucket, so it cannot be read from S3.")
        return self._read(bucket, check_key(key), MAX_PHOTO_BYTES)

    def delete_object(self, bucket: str, key: str) -> bool:
        """``HeadObject`` then ``DeleteObject`` of ``key`` in ``bucket`` (S3 answers 204 either way);
        True if the object was there. Idempotent."""
        def head() -> bool:
            try:
                self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                code, status, _, _ = client_error_parts(exc)
                if status == 404 and code != "NoSuchBucket":
                    return False
                raise
            return True

        there = self._call("HeadObject", bucket, key, head, bool)
        self._call("DeleteObject", bucket, key, lambda: self.client.delete_object(Bucket=bucket, Key=key),
                   lambda _reply: None)
        return there

    def _read(self, bucket: str, key: str, max_bytes: int | None) -> bytes:
        def fetch() -> bytes:
            reply = self.client.get_object(Bucket=bucket, Key=key)
            body = reply["Body"]
            try:
                length = reply.get("ContentLength")
                if max_bytes is not None and isinstance(length, int) and length > max_bytes:
                    raise PermanentStepError(
                        f"The photo is too large ({length // (1024 * 1024)} MB; at most "
                        f"{max_bytes // (1024 * 1024)} MB). Please upload a smaller JPEG or PNG.")
                # Read inside the request's hooks and error mapping: a connection dropped
                # mid-body is as transient as one dropped before the headers.
                data: bytes = body.read()
            finally:
                body.close()
            return data

        return self._call("GetObject", bucket, key, fetch, lambda data: data)

    def _call(self, op: str, bucket: str, key: str, send: Callable[[], Any], parse: Callable[[Any], T]) -> T:
        def on_error(exc: ClientError) -> tuple[str, StepError] | None:
            code, status, _, _ = client_error_parts(exc)
            if code in MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
                return "client_error", ObjectMissing(f"The stored file {key!r} does not exist in bucket {bucket!r}.")
            if code == "NoSuchBucket":
                return "client_error", PermanentStepError(
                    f"The S3 bucket {bucket!r} does not exist (NoSuchBucket, HTTP {status}): check the bucket "
                    "name (S3_BUCKET, or the photo's row) and AWS_REGION.")
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                return "client_error", PermanentStepError(
                    f"The S3 bucket {bucket!r} is in another region ({code}, HTTP {status}): set AWS_REGION to "
                    "the bucket's region.")
            if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem") or (
                status == 403 and code not in CREDENTIAL_CODES  # HEAD errors have no code, only 403
            ):
                missing = " (S3 also answers 403 for a missing object when the credentials may not list " \
                          "the bucket)" if op != "PutObject" else ""
                return "client_error", PermanentStepError(
                    f"Access to S3 bucket {bucket!r} was denied ({code}, HTTP {status}) for {op}{missing}: "
                    f"{CREDENTIAL_HINT}, and the bucket policy.")
            return None

        return call(self.hooks, S3, f"Amazon S3 (bucket {bucket!r})", op, send, parse, on_error)


class S3Storage(S3Objects):
    """Storage on one S3 bucket (generated images and books), keys under ``prefix``.

    An S3 PUT is atomic: a reader never sees half an object, and a re-run overwrites its own.
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, hooks: RequestHooks | None = None) -> None:
        if not bucket:
            raise ValueError("bucket is empty")
        super().__init__(client=client, hooks=hooks)
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @classmethod
    def from_env(cls, hooks: RequestHooks | None = None, env: Mapping[str, str] | None = None) -> S3Storage:
        """``S3_BUCKET`` (required: SystemExit without it) and ``S3_PREFIX``."""
        e = os.environ if env is None else env
        bucket = e.get("S3_BUCKET", "").strip()
        if not bucket:
            raise SystemExit("configuration error: S3_BUCKET is not set (S3 storage needs the output bucket's name)")
        return cls(bucket, prefix=e.get("S3_PREFIX", ""), client=make_client(S3, e), hooks=hooks)

    def object_key(self, key: str) -> str:
        """The S3 key for a storage key: the prefix + the checked key (UnsafeKey if unsafe)."""
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """``PutObject`` (atomic: a reader never sees half an object)."""
        k = self.object_key(key)
        self._call("PutObject", self.bucket, k,
                   lambda: self.client.put_object(Bucket=self.bucket, Key=k, Body=data, ContentType=content_type),
                   lambda _reply: None)

    def get(self, key: str) -> bytes:
        """``GetObject``'s bytes; ObjectMissing for NoSuchKey."""
        return self._read(self.bucket, self.object_key(key), None)

    def exists(self, key: str) -> bool:
        """``HeadObject``: True if the object is there, False for a 404."""
        k = self.object_key(key)

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=k)
            except ClientError as exc:
                code, status, _, _ = client_error_parts(exc)
                if status == 404 and code != "NoSuchBucket":  # HEAD has no body: a bare 404 is "absent"
                    return False
                raise
            return True

        return self._call("HeadObject", self.bucket, k, head, bool)

    def delete(self, key: str) -> bool:
        """``DeleteObject`` (S3 answers 204 whether or not the object was there, so a ``HeadObject``
        first tells which); True if it was there."""
        return self.delete_object(self.bucket, self.object_key(key))

    def delete_prefix(self, prefix: str) -> int:
        """Every object under ``prefix`` (ending in ``/``): ``ListObjectsV2`` pages, each deleted with
        one ``DeleteObjects`` of at most 1,000 keys (the API's limit: S3 API Reference,
        DeleteObjects). A key S3 reports it could not delete raises StorageUnavailable naming it."""
        p = self.prefix + check_prefix(prefix)
        count = 0
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": p, "MaxKeys": 1000}
            if token:
                args["ContinuationToken"] = token
            page: dict[str, Any] = self._call("ListObjectsV2", self.bucket, p,
                                              functools.partial(self.client.list_objects_v2, **args), dict)
            keys = [o["Key"] for o in page.get("Contents", [])]
            if keys:
                batch = {"Objects": [{"Key": k} for k in keys], "Quiet": True}
                reply: dict[str, Any] = self._call(
                    "DeleteObjects", self.bucket, p,
                    functools.partial(self.client.delete_objects, Bucket=self.bucket, Delete=batch), dict)
                errors = reply.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageUnavailable(
                        0, f"S3 could not delete {len(errors)} object(s) under {p!r}, e.g. {first.get('Key')!r}: "
                        f"{first.get('Code')} {first.get('Message')}", None)
                count += len(keys)
            if not page.get("IsTruncated"):
                return count
            token = page.get("NextContinuationToken")

    def url(self, key: str, expires_in: int | None = None) -> str:
        """A presigned GET URL valid for ``expires_in`` seconds (default PRESIGNED_URL_SECONDS,
        ``presigned_url_seconds()``: 15 minutes), computed locally, no request.

        With temporary credentials the URL carries the session token, as SigV4 requires: hand
        it only to whoever should read the object.
        """
        if expires_in is None:
            expires_in = presigned_url_seconds()
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=expires_in
        )
        return url
