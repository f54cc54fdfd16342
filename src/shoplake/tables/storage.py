"""Where tables live: a local folder or an S3 bucket, and what each library needs to reach
it. Credentials come from StorageSettings (or, where unset, the AWS default chain)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from shoplake.settings import StorageSettings


def on_object_storage(uri: str) -> bool:
    return uri.startswith("s3://")


def delta_options(uri: str, storage: StorageSettings) -> dict[str, str] | None:
    """delta-rs's ``storage_options`` for a table at ``uri`` (None for a local one)."""
    if not on_object_storage(uri):
        return None
    options = {
        "AWS_REGION": storage.region,
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false" if storage.path_style else "true",
    }
    if storage.endpoint:
        options["AWS_ENDPOINT_URL"] = storage.endpoint
    if storage.http:
        options["AWS_ALLOW_HTTP"] = "true"
    if storage.access_key_id:
        options["AWS_ACCESS_KEY_ID"] = storage.access_key_id
    if storage.secret_access_key is not None:
        options["AWS_SECRET_ACCESS_KEY"] = storage.secret_access_key.get_secret_value()
    if storage.session_token is not None:
        options["AWS_SESSION_TOKEN"] = storage.session_token.get_secret_value()
    # Each commit file is written with If-None-Match: the loser of a race for a version
    # gets 412 and delta-rs retries it or reports a conflict, never overwrites. The store
    # must support conditional writes (AWS S3, MinIO and SeaweedFS do).
    options["AWS_CONDITIONAL_PUT"] = "etag"
    return options


def arrow_filesystem(uri: str, storage: StorageSettings) -> tuple[pafs.FileSystem, str]:
    """Arrow's native filesystem holding ``uri``, and the path of ``uri`` in it."""
    if not on_object_storage(uri):
        local = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), Path(local).resolve().as_posix()
    endpoint = urlsplit(storage.endpoint) if storage.endpoint else None
    fs = pafs.S3FileSystem(
        access_key=storage.access_key_id,
        secret_key=(
            None
            if storage.secret_access_key is None
            else storage.secret_access_key.get_secret_value()
        ),
        session_token=(
            None if storage.session_token is None else storage.session_token.get_secret_value()
        ),
        region=storage.region,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme="http" if storage.http else "https",
        force_virtual_addressing=not storage.path_style,
    )
    return fs, uri[len("s3://") :].rstrip("/")


def arrow_subtree(uri: str, storage: StorageSettings) -> pafs.FileSystem:
    """A filesystem rooted at ``uri``: paths in it are relative to the table."""
    fs, path = arrow_filesystem(uri, storage)
    return pafs.SubTreeFileSystem(path, fs)
