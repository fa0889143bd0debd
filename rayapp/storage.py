"""Object storage under the lake: filesystems for local paths and ``s3://`` URIs (fsspec for
listing and small objects, pyarrow for data files), reachability, and the one atomic step leases
and probes rely on: create-if-absent."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rayapp.errors import LakeUnreachableError
from rayapp.urls import is_remote

if TYPE_CHECKING:
    import fsspec
    import pyarrow.fs as pafs

    from rayapp.settings import Settings

logger = logging.getLogger(__name__)


class Storage:
    """Filesystems and small objects for one Settings' S3 options (local paths need none)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def fsspec(self, uri: str) -> "tuple[fsspec.AbstractFileSystem, str]":
        """An fsspec filesystem and the path inside it for a local path or ``s3://`` URI."""
        if is_remote(uri):
            import s3fs

            parts = urlsplit(uri)
            return s3fs.S3FileSystem(**s3fs_options(self.settings)), f"{parts.netloc}{parts.path}".rstrip("/")
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), uri.rstrip("/") or "/"

    def arrow_fs(self, uri: str) -> "tuple[pafs.FileSystem, str]":
        """A pyarrow filesystem and the path inside it (used by Ray tasks)."""
        import pyarrow.fs as pafs

        if not is_remote(uri):
            return pafs.LocalFileSystem(), uri
        s = self.settings
        parts = urlsplit(uri)
        kwargs: dict[str, Any] = {"region": s.s3_region}
        if s.s3_endpoint_url:
            ep = urlsplit(s.s3_endpoint_url)
            kwargs["endpoint_override"] = ep.netloc
            kwargs["scheme"] = ep.scheme
        if s.s3_access_key_id:
            kwargs["access_key"] = s.s3_access_key_id
        if s.s3_secret_access_key is not None:
            kwargs["secret_key"] = s.s3_secret_access_key.get_secret_value()
        return pafs.S3FileSystem(**kwargs), f"{parts.netloc}{parts.path}".rstrip("/")

    @staticmethod
    def to_uri(uri_like: str, fs_path: str) -> str:
        """Turn a path returned by :meth:`fsspec`'s filesystem back into a URI of the same kind."""
        return f"s3://{fs_path.lstrip('/')}" if is_remote(uri_like) else fs_path

    def check_conditional_writes(self) -> None:
        """Refuse an S3 lake whose store lacks conditional writes (unless the user opted in).

        Writes a probe object twice with ``If-None-Match: *`` under ``<lake>/_ledger/.probe/``:
        the second write must be refused.

        Raises:
            LakeUnreachableError: the store accepted the second write, or the probe failed.
        """
        root = self.settings.lake_root
        if not is_remote(root) or self.settings.s3_allow_unsafe_rename:
            return
        import uuid

        from rayapp.urls import join_uri

        probe = join_uri(root, "_ledger", ".probe", uuid.uuid4().hex)
        try:
            first = self.create_exclusive(probe, b"1")
            second = self.create_exclusive(probe, b"2")
        finally:
            self.remove(probe)
        if not first or second:
            raise LakeUnreachableError(
                f"the S3 store behind {root} does not refuse a second write of an object written with If-None-Match: * "
                "(no conditional writes): Delta commits and run leases would not be safe when runs overlap. Use a store "
                "with conditional writes (AWS S3, current MinIO), or set RAYAPP_S3_ALLOW_UNSAFE_RENAME=true to accept the risk"
            )

    def check_reachable(self, uri: str | None = None) -> None:
        """Fail fast with one clear line when the lake (or ``uri``) cannot be reached.

        Local directories are created; for S3 the bucket must exist and answer.
        """
        target = uri or self.settings.lake_root
        try:
            fs, path = self.fsspec(target)
            if is_remote(target):
                bucket = path.split("/", 1)[0]
                try:
                    fs.ls(bucket, detail=False)
                except FileNotFoundError:
                    raise LakeUnreachableError(f"cannot reach {target}: bucket {bucket!r} does not exist") from None
            else:
                fs.makedirs(path, exist_ok=True)
        except LakeUnreachableError:
            raise
        except Exception as exc:  # noqa: BLE001 - any I/O failure means unreachable here
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LakeUnreachableError(f"cannot reach {target}: {reason}") from None

    # ---- small objects (leases, probes): create-if-absent is the one atomic step ----------------

    def create_exclusive(self, uri: str, data: bytes) -> bool:
        """Write ``data`` at ``uri`` only if nothing is there; False when something already is.

        Local: a hard link of a complete temp file (atomic, fails if the name exists). S3: a PUT
        with ``If-None-Match: *`` (conditional write; the store answers 412 when the key exists).
        """
        if not is_remote(uri):
            os.makedirs(os.path.dirname(uri), exist_ok=True)
            tmp = f"{uri}.{os.getpid()}.{id(data)}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, uri)
                return True
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
        fs, path = self.fsspec(uri)
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except Exception as exc:  # noqa: BLE001 - s3fs reports a failed precondition in several shapes
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Replace the object at ``uri`` (local: write a temp file and rename it over)."""
        if not is_remote(uri):
            os.makedirs(os.path.dirname(uri), exist_ok=True)
            tmp = f"{uri}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, uri)
            return
        fs, path = self.fsspec(uri)
        fs.pipe_file(path, data)

    def read_bytes(self, uri: str) -> bytes | None:
        """The object's bytes, None when it does not exist."""
        try:
            fs, path = self.fsspec(uri)
            return bytes(fs.cat_file(path))
        except FileNotFoundError:
            return None

    def list_names(self, uri: str) -> list[str]:
        """Names of the objects directly under ``uri`` (none when it does not exist)."""
        fs, path = self.fsspec(uri)
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def remove(self, uri: str) -> None:
        """Remove a file or folder under the lake (missing is fine; failures are logged)."""
        try:
            if not is_remote(uri):
                import shutil

                if os.path.isdir(uri):
                    shutil.rmtree(uri, ignore_errors=True)
                elif os.path.exists(uri):
                    os.remove(uri)
                return
            fs, path = self.fsspec(uri)
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception as exc:  # noqa: BLE001 - a leftover file is harmless; the caller moves on
            logger.warning("could not remove %s: %s", uri, exc)


def delta_storage_options(settings: Settings) -> dict[str, str]:
    """Storage options for delta-rs (object_store keys)."""
    opts: dict[str, str] = {}
    if settings.s3_endpoint_url:
        opts["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.s3_access_key_id:
        opts["AWS_ACCESS_KEY_ID"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        opts["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    opts["AWS_REGION"] = settings.s3_region
    if settings.s3_allow_http:
        opts["AWS_ALLOW_HTTP"] = "true"
    if settings.s3_allow_unsafe_rename:
        # Opted in for a store without conditional writes: a commit is copy + delete, and two
        # writers of the same version can both "win" (one commit lost). Run leases still serialise runs.
        opts["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
    else:
        # A commit is a PUT with If-None-Match: the store refuses a second writer of the same
        # version, and delta-rs retries or reports the conflict: no commit is ever lost.
        opts["conditional_put"] = "etag"
    return opts


def s3fs_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``s3fs.S3FileSystem``."""
    opts: dict[str, Any] = {
        "client_kwargs": {"region_name": settings.s3_region},
        "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}},
    }
    if settings.s3_endpoint_url:
        opts["client_kwargs"]["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_access_key_id:
        opts["key"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        opts["secret"] = settings.s3_secret_access_key.get_secret_value()
    return opts
