"""Read and write files by URI: local paths, `gs://`, `s3://` and (read-only) `http(s)://`.

Every capability receives its inputs and writes its outputs as URIs, so that the same step
runs on a laptop (plain paths), on GKE (`gs://`) or beside KFP's S3-API artifact store
(MinIO or SeaweedFS, `s3://`). Two functions cover all of it:

    digest = download("s3://models/taxi/model.pt", Path("/tmp/model.pt"))
    upload(Path("metrics.json"), "gs://runs/2026-11-23/metrics.json")

Guarantees that the callers rely on:

- `download` never leaves a half-written file behind: bytes go to a temporary sibling of
  `dest` that replaces `dest` only once the whole object has arrived, so a reader sees the old
  file or the new one, and a failed download leaves `dest` as it was and no temporary file.
- `download` returns the sha256 of the bytes it wrote, computed while they stream through in
  chunks (objects are never held whole in memory), so lineage can record what was read
  without reading it twice.
- Every failure is a `StorageError` whose message names the URI and says what went wrong.

Client libraries are imported on first use of their scheme, so a step that only touches
local files neither pays for nor needs google-cloud-storage or minio.

Credentials on a cluster
------------------------

s3:// (MinIO, SeaweedFS, AWS) takes its endpoint and credentials from a `StorageConfig`;
`StorageConfig.from_env`, used whenever none is passed, reads them in this order:

1. The environment: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (both or neither), and
   `AWS_SESSION_TOKEN` if the keys are temporary. This is what `kfp.kubernetes.use_secret_as_env`
   or a pod's `envFrom: secretRef` gives.
2. Else a mounted Secret: `SLIPWAY_STORAGE_SECRET_DIR` names the folder where the Secret is
   mounted as files (`kfp.kubernetes.use_secret_as_volume`, or a `secret` volume). Each file is
   one of the Secret's keys: either `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and an
   optional `AWS_SESSION_TOKEN`), or `accesskey` and `secretkey`, the keys of KFP's own
   `mlpipeline-minio-artifact` Secret, which can therefore be mounted as it is. The folder may
   also hold `AWS_ENDPOINT_URL`, used when the environment names no endpoint. A trailing
   newline in a file is ignored. The files are read at each call, so a rotated Secret is
   picked up without a restart.
3. Else no credentials: anonymous requests (public buckets only).

The endpoint comes from `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, KServe's `S3_ENDPOINT`
(+ `S3_USE_HTTPS`), then the secret folder's `AWS_ENDPOINT_URL`, else AWS S3 itself; the region
from `AWS_REGION` or `AWS_DEFAULT_REGION`. The two sources are never mixed: with one of the key
variables set in the environment, the secret folder is not read, and a half-set pair (or a
folder holding only one of its two files) is an error that names what is missing. Secret values
never appear in a message or a repr.

Libraries that reach S3 through boto3 themselves (Feast's S3 registry, MLflow's S3 artifact
store) know nothing of the secret folder or of `S3_ENDPOINT`; `boto3_environment()` sets the
standard AWS variables from the same `StorageConfig` around such a call.

gs:// takes endpoint and credentials from the environment the way google-cloud-storage does:
Application Default Credentials, which on a cluster is `GOOGLE_APPLICATION_CREDENTIALS` naming
a mounted service account key file (or Workload Identity with no file at all), or
`STORAGE_EMULATOR_HOST` for an emulator, where the library itself switches to anonymous
credentials and no project. A key file that is missing or unusable is a `StorageError` naming
the variable and the path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from slipway.atomic import atomic_output

SUPPORTED_SCHEMES = ("file", "gs", "s3", "http", "https")
DEFAULT_S3_ENDPOINT = "https://s3.amazonaws.com"
# Large enough that per-chunk overhead is negligible, small enough to keep memory flat.
CHUNK_SIZE = 1024 * 1024
# (connect, read) seconds: an unreachable host fails fast; a slow one may pause between chunks.
HTTP_TIMEOUT = (10.0, 60.0)

# A URI has a scheme only when "scheme://" starts it, so a local path that merely contains
# a colon ("runs/12:00/model.pt") stays a path.
_SCHEME_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageError(Exception):
    """Reading or writing a URI failed; the message names the URI and what went wrong."""


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """Where and as whom to reach the S3 API (gs:// and http(s):// need no configuration here).

    `s3_endpoint` is a URL (`http://minio-service.kubeflow:9000`); its scheme decides TLS.
    None means AWS S3 itself. The secret key and the session token are left out of the repr
    so that logging a config never prints them.
    """

    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = dataclasses.field(default=None, repr=False)
    s3_region: str | None = None
    s3_session_token: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageConfig:
        """Read the variables that KFP, KServe and the AWS tools already set in pods, else the secret folder.

        The order is the module docstring's ("Credentials on a cluster"). The endpoint is
        `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (the AWS SDKs' names, the S3-specific one
        first as they do), else KServe's `S3_ENDPOINT`, which carries no scheme
        (`minio-service.kubeflow:9000`) and takes TLS from `S3_USE_HTTPS` ("0" means plain
        http, the default is https), else `AWS_ENDPOINT_URL` in the secret folder. Empty values
        count as unset. A misconfigured source raises `StorageError` naming the variable or file.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        endpoint = get("AWS_ENDPOINT_URL_S3") or get("AWS_ENDPOINT_URL")
        if endpoint is None:
            endpoint = get("S3_ENDPOINT")
            if endpoint is not None and "://" not in endpoint:
                use_https = (get("S3_USE_HTTPS") or "1").lower() not in ("0", "false", "no")
                endpoint = ("https://" if use_https else "http://") + endpoint
        region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")

        access_key, secret_key = get(ENV_ACCESS_KEY), get(ENV_SECRET_KEY)
        if access_key or secret_key:
            if not (access_key and secret_key):
                have, lack = (ENV_ACCESS_KEY, ENV_SECRET_KEY) if access_key else (ENV_SECRET_KEY, ENV_ACCESS_KEY)
                raise StorageError(
                    f"S3 credentials: {have} is set but {lack} is not: set both, or neither and mount the "
                    f"storage Secret at the folder that {ENV_SECRET_DIR} names"
                )
            return cls(endpoint, access_key, secret_key, region, get(ENV_SESSION_TOKEN))
        secret_dir = get(ENV_SECRET_DIR)
        if secret_dir is None:
            return cls(s3_endpoint=endpoint, s3_region=region)
        secret = _read_secret_dir(pathlib.Path(secret_dir))
        return cls(
            s3_endpoint=endpoint or secret.get(SECRET_ENDPOINT_FILE),
            s3_access_key=secret["access_key"],
            s3_secret_key=secret["secret_key"],
            s3_region=region,
            s3_session_token=secret.get("session_token"),
        )


# The environment variables and secret files that `StorageConfig.from_env` reads.
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN = "AWS_SESSION_TOKEN"
ENV_SECRET_DIR = "SLIPWAY_STORAGE_SECRET_DIR"
# The key pairs a mounted Secret may hold, in the order they are looked for: the AWS names, then
# those of KFP's `mlpipeline-minio-artifact` Secret.
SECRET_KEY_FILES = ((ENV_ACCESS_KEY, ENV_SECRET_KEY), ("accesskey", "secretkey"))
SECRET_ENDPOINT_FILE = "AWS_ENDPOINT_URL"


def _read_secret_dir(folder: pathlib.Path) -> dict[str, str]:
    """The credentials (and optional endpoint) in a mounted Secret's folder; every problem names the file."""
    expected = " or ".join(f"{access} and {secret}" for access, secret in SECRET_KEY_FILES)
    if not folder.is_dir():
        raise StorageError(
            f"S3 credentials: {ENV_SECRET_DIR} names {folder}, which is not a folder: mount the storage "
            f"Secret there (files {expected}), or unset {ENV_SECRET_DIR}"
        )

    def read(name: str) -> str | None:
        path = folder / name
        if not path.is_file():  # follows the symlinks a Kubernetes secret volume is made of
            return None
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"S3 credentials: cannot read {path} (from {ENV_SECRET_DIR}): {_reason(exc)}") from exc
        if not value:
            raise StorageError(f"S3 credentials: {path} (from {ENV_SECRET_DIR}) is empty")
        return value

    for access_name, secret_name in SECRET_KEY_FILES:
        access_key, secret_key = read(access_name), read(secret_name)
        if access_key and secret_key:
            found = {"access_key": access_key, "secret_key": secret_key}
            if access_name == ENV_ACCESS_KEY and (token := read(ENV_SESSION_TOKEN)):
                found["session_token"] = token
            if endpoint := read(SECRET_ENDPOINT_FILE):
                found[SECRET_ENDPOINT_FILE] = endpoint
            return found
        if access_key or secret_key:
            have, lack = (access_name, secret_name) if access_key else (secret_name, access_name)
            raise StorageError(
                f"S3 credentials: {folder} (from {ENV_SECRET_DIR}) has {have} but no {lack}: the Secret "
                f"needs both keys"
            )
    # Kubernetes keeps its bookkeeping in hidden entries (..data, ..2026_11_24_…): list only the keys.
    names = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
    raise StorageError(
        f"S3 credentials: {folder} (from {ENV_SECRET_DIR}) holds no S3 credentials: expected files {expected} "
        f"(the keys of the mounted Secret); found {', '.join(names) if names else 'nothing'}"
    )


@contextlib.contextmanager
def boto3_environment(config: StorageConfig | None = None) -> Iterator[None]:
    """Set the AWS variables that boto3 reads from `config` for the block, then restore them.

    For Feast's S3 registry and MLflow's S3 artifact store, which build their own boto3 clients:
    what the environment already sets is kept (it came first in `from_env` anyway), what the
    secret folder or KServe's `S3_ENDPOINT` supplied is added. The endpoint goes to
    `AWS_ENDPOINT_URL_S3`, which boto3 honours for S3 only. `config` None means `from_env()`.
    """
    config = StorageConfig.from_env() if config is None else config
    wanted = {
        ENV_ACCESS_KEY: config.s3_access_key,
        ENV_SECRET_KEY: config.s3_secret_key,
        ENV_SESSION_TOKEN: config.s3_session_token,
        "AWS_ENDPOINT_URL_S3": config.s3_endpoint,
    }
    if any(os.environ.get(name, "").strip() for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")):
        del wanted["AWS_ENDPOINT_URL_S3"]
    added = [name for name, value in wanted.items() if value and not os.environ.get(name, "").strip()]
    previous = {name: os.environ.get(name) for name in added}
    for name in added:
        os.environ[name] = wanted[name]  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scheme_of(uri: str) -> str:
    """Say which backend serves `uri`: "file", "gs", "s3" or "http" (for http and https).

    A plain path or a file:// URI is "file". Any other scheme is refused here, before
    anything is read or written, with the list of what is supported.
    """
    if not uri:
        raise StorageError("empty URI: give a local path or a file, gs, s3 or http(s) URI")
    match = _SCHEME_PATTERN.match(uri)
    if match is None:
        return "file"
    scheme = match.group(1).lower()
    if scheme not in SUPPORTED_SCHEMES:
        supported = ", ".join(f"{name}://" for name in SUPPORTED_SCHEMES)
        raise StorageError(
            f"unsupported scheme '{scheme}' in {uri}: supported schemes are {supported} "
            "(or a plain local path)"
        )
    return "http" if scheme == "https" else scheme


def download(uri: str, dest: pathlib.Path, config: StorageConfig | None = None) -> str:
    """Copy the object at `uri` to the local file `dest` and return its sha256 hex digest.

    `dest`'s parent folders are created. The copy is atomic (see the module docstring): on any
    failure `dest` is untouched and no temporary file remains. `config` is used for s3:// only;
    None reads it from the environment (`StorageConfig.from_env`) at call time.
    """
    fetch = _FETCHERS[scheme_of(uri)]
    dest = pathlib.Path(dest)
    try:
        with _atomic_write(dest, uri) as file:
            sink = _HashingWriter(file)
            fetch(uri, sink, config)
    except OSError as exc:
        raise StorageError(f"cannot download {uri} to {dest}: {_reason(exc)}") from exc
    return sink.hexdigest()


def upload(src: pathlib.Path, uri: str, config: StorageConfig | None = None) -> None:
    """Copy the local file `src` to `uri`.

    A local destination is written atomically, its parent folders created; gs:// and s3://
    put one object (the bucket must exist). http(s):// is read-only. `config` as in `download`.
    """
    scheme = scheme_of(uri)
    if scheme == "http":
        raise StorageError(f"cannot upload to {uri}: http(s) URIs are read-only")
    src = pathlib.Path(src)
    if src.is_dir():
        raise StorageError(f"cannot upload {src} to {uri}: {src} is a directory, not a file")
    if not src.is_file():
        raise StorageError(f"cannot upload {src} to {uri}: {src} not found")
    try:
        _PUTTERS[scheme](src, uri, config)
    except OSError as exc:
        raise StorageError(f"cannot upload {src} to {uri}: {_reason(exc)}") from exc


# --- shared plumbing ---------------------------------------------------------------------


class _HashingWriter:
    """A write-only file that hashes every byte on its way to the real file.

    It supports just what the client libraries call: `write`, and a rewind to the start
    (google-cloud-storage rewinds when a server restarts a transcoded download), which
    empties the file and restarts the hash so that both describe the same bytes.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return self._file.write(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) != (0, io.SEEK_SET):
            raise io.UnsupportedOperation("only a rewind to the start is supported")
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        return 0

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def _atomic_write(path: pathlib.Path, uri: str) -> Iterator[BinaryIO]:
    """Yield a file that becomes `path` only if the block completes (see `slipway.atomic`)."""
    with atomic_output(path) as temp:
        try:
            file = temp.open("wb")
        except OSError as exc:
            raise StorageError(f"cannot write {path} (for {uri}): {_reason(exc)}") from exc
        with file:
            yield file


def _copy_file(src: pathlib.Path, sink: BinaryIO | _HashingWriter) -> None:
    with src.open("rb") as source:
        shutil.copyfileobj(source, sink, CHUNK_SIZE)  # type: ignore[arg-type]


def _reason(exc: BaseException) -> str:
    """The human part of an exception: OSError's strerror without the errno noise."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _bucket_and_key(uri: str) -> tuple[str, str]:
    """Split `gs://bucket/some/key` into ("bucket", "some/key"), refusing what names no object."""
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise StorageError(f"{uri} names no object: expected {scheme}://BUCKET/PATH/TO/OBJECT")
    return bucket, key


# --- local files ---------------------------------------------------------------------------


def _local_path(uri: str) -> pathlib.Path:
    """The path that a plain path or a file:// URI (percent-encoded, no remote host) names."""
    if not _SCHEME_PATTERN.match(uri):
        return pathlib.Path(uri)
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise StorageError(
            f"{uri} names a file on host '{parts.netloc}': only local files are supported"
        )
    if not parts.path:
        raise StorageError(f"{uri} names no file")
    return pathlib.Path(urllib.request.url2pathname(parts.path))


def _fetch_local(uri: str, sink: _HashingWriter, config: StorageConfig | None) -> None:
    path = _local_path(uri)
    if path.is_dir():
        raise StorageError(f"{uri} is a directory, not a file")
    try:
        _copy_file(path, sink)
    except FileNotFoundError as exc:
        raise StorageError(f"{uri} not found") from exc


def _put_local(src: pathlib.Path, uri: str, config: StorageConfig | None) -> None:
    dest = _local_path(uri)
    if dest.is_dir():
        raise StorageError(f"cannot upload {src} to {uri}: {uri} is a directory")
    with _atomic_write(dest, uri) as file:
        _copy_file(src, file)


# --- http(s):// ----------------------------------------------------------------------------


def _fetch_http(uri: str, sink: _HashingWriter, config: StorageConfig | None) -> None:
    import requests

    try:
        with requests.get(uri, stream=True, timeout=HTTP_TIMEOUT) as response:
            if response.status_code == 404:
                raise StorageError(f"{uri} not found (HTTP 404)")
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                sink.write(chunk)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "error"
        reason = exc.response.reason if exc.response is not None else str(exc)
        raise StorageError(f"cannot download {uri}: HTTP {status} {reason}") from exc
    except requests.RequestException as exc:
        raise StorageError(f"cannot download {uri}: {exc}") from exc


# --- gs:// ---------------------------------------------------------------------------------

ENV_GOOGLE_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"


@contextlib.contextmanager
def _gcs_bucket(uri: str, bucket_name: str) -> Iterator[object]:
    """A bucket handle on a fresh client, closed afterwards (no client outlives a call).

    google-cloud-storage finds credentials itself; when `STORAGE_EMULATOR_HOST` is set it
    targets the emulator with anonymous credentials and no project, so nothing is added here.
    """
    import google.auth.exceptions
    from google.cloud import storage as gcs

    key_file = os.environ.get(ENV_GOOGLE_CREDENTIALS, "").strip()
    uses_key_file = bool(key_file) and not os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if uses_key_file and not pathlib.Path(key_file).is_file():
        raise StorageError(
            f"cannot reach {uri}: {ENV_GOOGLE_CREDENTIALS} names {key_file}, which does not exist: mount the "
            "service account key file there, or unset the variable to use the node's or Workload Identity's "
            "credentials"
        )
    try:
        client = gcs.Client()
    except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
        if uses_key_file:
            raise StorageError(
                f"cannot reach {uri}: {ENV_GOOGLE_CREDENTIALS} names {key_file}, which is not a usable "
                f"Google Cloud credentials file (a service account key JSON is expected): {exc}"
            ) from exc
        raise StorageError(
            f"cannot reach {uri}: no Google Cloud credentials ({exc}); set "
            "GOOGLE_APPLICATION_CREDENTIALS, or STORAGE_EMULATOR_HOST for an emulator"
        ) from exc
    try:
        yield client.bucket(bucket_name)
    finally:
        client.close()


def _gcs_errors() -> tuple[type[BaseException], ...]:
    """What google-cloud-storage raises for a failed call once its own retries are spent."""
    import google.api_core.exceptions
    import google.auth.exceptions
    import requests
    from google.cloud.storage.exceptions import DataCorruption

    return (
        google.api_core.exceptions.GoogleAPIError,
        google.auth.exceptions.GoogleAuthError,
        DataCorruption,
        requests.RequestException,
    )


def _fetch_gs(uri: str, sink: _HashingWriter, config: StorageConfig | None) -> None:
    from google.api_core.exceptions import NotFound

    bucket_name, key = _bucket_and_key(uri)
    with _gcs_bucket(uri, bucket_name) as bucket:
        try:
            bucket.blob(key).download_to_file(sink)  # type: ignore[attr-defined]
        except NotFound as exc:
            raise StorageError(f"{uri} not found") from exc
        except _gcs_errors() as exc:
            raise StorageError(f"cannot download {uri}: {exc}") from exc


def _put_gs(src: pathlib.Path, uri: str, config: StorageConfig | None) -> None:
    from google.api_core.exceptions import NotFound

    bucket_name, key = _bucket_and_key(uri)
    with _gcs_bucket(uri, bucket_name) as bucket:
        try:
            bucket.blob(key).upload_from_filename(str(src))  # type: ignore[attr-defined]
        except NotFound as exc:
            raise StorageError(
                f"cannot upload to {uri}: bucket '{bucket_name}' does not exist"
            ) from exc
        except _gcs_errors() as exc:
            raise StorageError(f"cannot upload {src} to {uri}: {exc}") from exc


# --- s3:// ---------------------------------------------------------------------------------


def _minio_client(uri: str, config: StorageConfig | None) -> object:
    """A minio client for the configured endpoint; minio wants HOST:PORT and a TLS flag."""
    from minio import Minio

    config = StorageConfig.from_env() if config is None else config
    endpoint = config.s3_endpoint or DEFAULT_S3_ENDPOINT
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StorageError(
            f"cannot reach {uri}: S3 endpoint '{endpoint}' is not of the form http(s)://HOST[:PORT]"
        )
    try:
        return Minio(
            parts.netloc,
            access_key=config.s3_access_key,
            secret_key=config.s3_secret_key,
            session_token=config.s3_session_token,
            secure=parts.scheme == "https",
            region=config.s3_region,
        )
    except ValueError as exc:
        raise StorageError(f"cannot reach {uri}: {exc}") from exc


def _s3_errors() -> tuple[type[BaseException], ...]:
    """What minio raises: its own errors, urllib3's once retries are spent, ValueError for names."""
    import urllib3.exceptions
    from minio.error import MinioException

    return (MinioException, urllib3.exceptions.HTTPError, ValueError)


def _s3_missing(exc: BaseException) -> str | None:
    """Which of bucket or object `exc` says does not exist ("bucket", "object"), else None."""
    from minio.error import S3Error

    if not isinstance(exc, S3Error):
        return None
    if exc.code == "NoSuchBucket":
        return "bucket"
    if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound") or exc.response.status == 404:
        return "object"
    return None


def _fetch_s3(uri: str, sink: _HashingWriter, config: StorageConfig | None) -> None:
    bucket, key = _bucket_and_key(uri)
    client = _minio_client(uri, config)
    try:
        response = client.get_object(bucket, key)  # type: ignore[attr-defined]
        try:
            for chunk in response.stream(CHUNK_SIZE):
                sink.write(chunk)
        finally:
            response.close()
            response.release_conn()
    except _s3_errors() as exc:
        missing = _s3_missing(exc)
        if missing == "bucket":
            raise StorageError(f"{uri} not found: bucket '{bucket}' does not exist") from exc
        if missing == "object":
            raise StorageError(f"{uri} not found") from exc
        raise StorageError(f"cannot download {uri}: {exc}") from exc


def _put_s3(src: pathlib.Path, uri: str, config: StorageConfig | None) -> None:
    bucket, key = _bucket_and_key(uri)
    client = _minio_client(uri, config)
    try:
        client.fput_object(bucket, key, str(src))  # type: ignore[attr-defined]
    except _s3_errors() as exc:
        if _s3_missing(exc) == "bucket":
            raise StorageError(f"cannot upload to {uri}: bucket '{bucket}' does not exist") from exc
        raise StorageError(f"cannot upload {src} to {uri}: {exc}") from exc


_FETCHERS: Mapping[str, Callable[[str, _HashingWriter, StorageConfig | None], None]] = {
    "file": _fetch_local,
    "gs": _fetch_gs,
    "s3": _fetch_s3,
    "http": _fetch_http,
}
_PUTTERS: Mapping[str, Callable[[pathlib.Path, str, StorageConfig | None], None]] = {
    "file": _put_local,
    "gs": _put_gs,
    "s3": _put_s3,
}  # http(s) has no putter: `upload` refuses it as read-only before looking here


def sha256_of(path: pathlib.Path) -> str:
    """The sha256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
