"""Result files in an S3-compatible bucket: ``<prefix>results/<job name>/<job id>-<attempt>/<file>``.

The attempt in the key is what makes several files appear at once without a rename: an attempt uploads
under its own keys (multipart uploads, completed only when the whole attempt succeeded), and the job's
FINISH transition, which records the attempt on the job row, is what publishes them. Objects of other
attempts (a worker that died between completing and FINISH) are never reachable through the job's uris and
are deleted by the janitor, as are multipart uploads whose attempt is no longer running.

Every botocore error becomes :class:`~segport.errors.ResultStoreUnavailable` here, at the boundary.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from segport.domain.naming import JOB_NAME_RE
from segport.errors import ResultStoreUnavailable
from segport.results.base import Attempt, RemoteResult, media_type_of, new_staging
from segport.settings import Settings

log = logging.getLogger("segport.results.s3")


class S3ResultStore:
    def __init__(self, settings: Settings, staging_root: Path) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        prefix = settings.s3_prefix.lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.root = f"{self.prefix}results/"
        self.endpoint = settings.s3_endpoint_url or None
        self.part_size = settings.s3_part_size_bytes
        self.buffers = settings.s3_upload_buffers
        self.presigned_ttl_s = settings.s3_presigned_ttl_s if settings.s3_presigned_redirect else 0
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if self.endpoint else "auto"},
            # plain SigV4 payloads: S3-compatible stores do not all know the newer default checksums
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=settings.s3_timeout_s,
            read_timeout=settings.s3_timeout_s,
            max_pool_connections=32,
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region is None and self.endpoint:
            region = "us-east-1"  # any region signs for a store of our own; AWS itself finds the bucket's
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=region, config=config
        )
        self.staging_root = staging_root
        self.staging_root.mkdir(parents=True, exist_ok=True)

    # --- the boundary ------------------------------------------------------------------------------
    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 request on our bucket; every failure becomes :class:`ResultStoreUnavailable`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)  # type: ignore[no-any-return]
        except ClientError as exc:
            raise ResultStoreUnavailable(f"S3 {operation} failed: {_describe(exc)}") from None
        except BotoCoreError as exc:
            raise ResultStoreUnavailable(f"S3 {operation} failed: {exc}") from None

    def check(self) -> None:
        """Can we write to the bucket? One line naming the problem if not (start-up of serve and worker)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"at {self.endpoint}" if self.endpoint else "on AWS"
        if not self.bucket:
            raise ResultStoreUnavailable("SEGPORT_RESULTS=s3 needs SEGPORT_S3_BUCKET (the bucket holding result files)")
        try:
            self.client.head_bucket(Bucket=self.bucket)
            # HeadBucket needs only read access: a multipart upload begun and aborted proves we may write
            probe = f"{self.prefix}.segport-write-check"
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=probe)
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=probe, UploadId=upload["UploadId"])
        except NoCredentialsError:
            raise ResultStoreUnavailable(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
            ) from None
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            if status == 404 or code == "NoSuchBucket":
                raise ResultStoreUnavailable(f"S3 bucket {self.bucket!r} does not exist {where}") from None
            if status in (401, 403):
                raise ResultStoreUnavailable(
                    f"S3 refused access to bucket {self.bucket!r} {where} ({_describe(exc)}): "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"
                ) from None
            raise ResultStoreUnavailable(f"S3 bucket {self.bucket!r} {where}: {_describe(exc)}") from None
        except BotoCoreError as exc:
            raise ResultStoreUnavailable(f"cannot reach S3 {where}: {exc}") from None

    # --- writing -----------------------------------------------------------------------------------
    def begin(self, job_id: str, attempt: int, job_name: str, *, prefix: bytes = b"") -> Attempt:
        from segport.results.s3_upload import S3Attempt

        tag = f"{job_id}-{attempt}"
        self._job_name(job_name)
        folder = self.staging(job_id, attempt)
        return S3Attempt(
            folder,
            lambda name: self.key(job_name, tag, name),
            self.call,
            _object_headers,
            prefix=prefix,
            part_size=self.part_size,
            buffers=self.buffers,
        )

    def key(self, job_name: str, tag: str, file_name: str) -> str:
        if "/" in file_name or file_name in ("", ".", ".."):
            raise ValueError(f"not a result file name: {file_name!r}")
        return f"{self.root}{self._job_name(job_name)}/{tag}/{file_name}"

    def staging(self, job_id: str, attempt: int) -> Path:
        """The local folder holding the attempt's FIFOs (no file data ever lands there)."""
        return new_staging(self.staging_root, job_id, attempt)

    # --- reading -----------------------------------------------------------------------------------
    def path(self, job_name: str, file_name: str) -> Path | None:
        return None  # never on this process's disk

    def locate(self, job_name: str, job_id: str, attempt: int, file_name: str) -> RemoteResult | None:
        from botocore.exceptions import ClientError

        key = self.key(job_name, f"{job_id}-{attempt}", file_name)
        from botocore.exceptions import BotoCoreError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None  # a missing object is not an outage
            raise ResultStoreUnavailable(f"S3 head_object failed: {_describe(exc)}") from None
        except BotoCoreError as exc:
            raise ResultStoreUnavailable(f"S3 head_object failed: {exc}") from None
        etag = head["ETag"]
        url = None
        if self.presigned_ttl_s:
            url = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key, **_response_overrides(file_name)},
                ExpiresIn=self.presigned_ttl_s,
            )
        return RemoteResult(
            size=int(head["ContentLength"]),
            modified=head["LastModified"],
            read=lambda start, end: self._read(key, etag, start, end),
            redirect_url=url,
        )

    def _read(self, key: str, etag: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of the object, as long as it is the one we looked at."""
        from botocore.exceptions import BotoCoreError

        body = self.call("get_object", Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=etag)["Body"]
        try:
            yield from body.iter_chunks(1 << 16)
        except BotoCoreError as exc:
            raise ResultStoreUnavailable(f"S3 get_object failed while streaming: {exc}") from None
        finally:
            body.close()

    # --- expiry and cleanup ------------------------------------------------------------------------
    def delete(self, job_name: str) -> None:
        for key in self._keys(f"{self.root}{self._job_name(job_name)}/"):
            self.call("delete_object", Key=key)

    def sweep_staging(self, in_use: Callable[[], set[str]]) -> int:
        """Remove FIFO folders and abort multipart uploads of attempts that no longer run."""
        folders = list(self.staging_root.iterdir())
        uploads = self._uploads()  # listed before asking, as the Protocol says
        keep = in_use()
        removed = 0
        for entry in folders:
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        for key, upload_id in uploads:
            parsed = self._parse(key)
            if parsed is not None and parsed[1] in keep:
                continue
            try:
                self.call("abort_multipart_upload", Key=key, UploadId=upload_id)
                removed += 1
            except ResultStoreUnavailable as exc:  # e.g. completed meanwhile
                log.info("could not abort the upload of %s: %s", key, exc)
        return removed

    def sweep_published(self, kept: Callable[[list[str]], dict[str, str]]) -> int:
        found = [(key, parsed) for key in self._keys(self.root) if (parsed := self._parse(key)) is not None]
        names = sorted({name for _, (name, _) in found})
        keep = kept(names) if names else {}
        removed = 0
        for key, (name, tag) in found:
            if keep.get(name) != tag:
                self.call("delete_object", Key=key)
                removed += 1
        return removed

    def _keys(self, prefix: str) -> Iterator[str]:
        token: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", Prefix=prefix, **token)
            yield from (item["Key"] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _uploads(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        marker: dict[str, str] = {}
        while True:
            page = self.call("list_multipart_uploads", Prefix=self.root, **marker)
            found.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return found
            marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def _parse(self, key: str) -> tuple[str, str] | None:
        """``(job name, <job id>-<attempt>)`` of one of our keys, or ``None`` for anything else."""
        parts = key[len(self.root) :].split("/")
        if not key.startswith(self.root) or len(parts) != 3 or not JOB_NAME_RE.match(parts[0]):
            return None
        return parts[0], parts[1]

    @staticmethod
    def _job_name(job_name: str) -> str:
        if not JOB_NAME_RE.match(job_name):
            raise ValueError(f"not a job name: {job_name!r}")
        return job_name


def content_disposition(file_name: str) -> str:
    """The header Starlette writes for a local download, so a file keeps its name whichever way it is sent."""
    quoted = quote(file_name)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != file_name else f'attachment; filename="{file_name}"'


def _object_headers(file_name: str) -> dict[str, str]:
    return {"ContentType": media_type_of(file_name), "ContentDisposition": content_disposition(file_name)}


def _response_overrides(file_name: str) -> dict[str, str]:
    return {
        "ResponseContentDisposition": content_disposition(file_name),
        "ResponseContentType": media_type_of(file_name),
    }


def _describe(exc: Any) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code") or status or "error"
    message = error.get("Message") or ""
    return f"{code} {message}".strip()
