"""A Python client for segport — and for any GrowingIO-compatible segment export API.

    from segport.client import Client

    with Client("http://127.0.0.1:8000", token) as client:
        paths = client.export_segment("WlGk4Daj", "seg_51activity", ["id_$basic_userId", "usr_gender"])

:class:`Client` and :class:`AsyncClient` share one implementation: their methods are written once in
:mod:`segport.client.base`, over the I/O-free flows of :mod:`segport.client.core`; each twin adds only its
I/O. Every error is a :class:`ClientError`.
"""

from segport.client.aio import AsyncClient
from segport.client.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    DownloadFailed,
    EngineOverloaded,
    FileNotFound,
    Forbidden,
    InvalidArgument,
    InvalidBody,
    InvalidKey,
    InvalidParameter,
    JobExpired,
    JobFailed,
    JobNotFound,
    MetadataBusy,
    MetadataUnavailable,
    NotFound,
    OutOfMemory,
    PayloadTooLarge,
    ProjectNotFound,
    ResourceExhausted,
    SegmentNotFound,
    ServerError,
    StorageFull,
    TagNotFound,
    TooManyJobs,
    TooManyOpenFiles,
    TooManyProperties,
    TooManyRequests,
    Unauthorized,
    UnexpectedResponse,
    UnknownKey,
    WaitTimeout,
)
from segport.client.models import Backoff, Job, JobError, JobResult, Progress
from segport.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthError",
    "Backoff",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "DownloadFailed",
    "EngineOverloaded",
    "FileNotFound",
    "Forbidden",
    "InvalidArgument",
    "InvalidBody",
    "InvalidKey",
    "InvalidParameter",
    "Job",
    "JobError",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "JobResult",
    "MetadataBusy",
    "MetadataUnavailable",
    "NotFound",
    "OutOfMemory",
    "PayloadTooLarge",
    "Progress",
    "ProjectNotFound",
    "ResourceExhausted",
    "SegmentNotFound",
    "ServerError",
    "StorageFull",
    "TagNotFound",
    "TooManyJobs",
    "TooManyOpenFiles",
    "TooManyProperties",
    "TooManyRequests",
    "Unauthorized",
    "UnexpectedResponse",
    "UnknownKey",
    "WaitTimeout",
]
