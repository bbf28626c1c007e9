"""The storage layer, run for real: local files, and S3, GCS and HTTP servers on 127.0.0.1.

The servers are stand-ins that speak the real protocols (REFERENCE.md, "Storage and cluster
stand-ins"): moto for the S3 API (what the minio client talks to in KFP's artifact store),
gcp-storage-emulator for GCS (reached through `STORAGE_EMULATOR_HOST`, as in CI), and
`http.server` for http(s) URIs. Each starts once per module on a free port.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from conftest import GS_BUCKET, S3_BUCKET, MiB, files_in, payload, sha256

from slipway.storage import StorageConfig, StorageError, download, scheme_of, upload

# --- URIs and configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("/data/taxi.csv", "file"),
        ("data/taxi.csv", "file"),
        ("runs/12:00/model.pt", "file"),  # a colon inside a path is not a scheme
        ("file:///data/taxi.csv", "file"),
        ("gs://bucket/taxi.csv", "gs"),
        ("s3://bucket/taxi.csv", "s3"),
        ("S3://bucket/taxi.csv", "s3"),
        ("http://example.org/taxi.csv", "http"),
        ("https://example.org/taxi.csv", "http"),
    ],
)
def test_scheme_of_names_the_backend_that_serves_a_uri(uri: str, scheme: str) -> None:
    assert scheme_of(uri) == scheme


def test_an_unsupported_scheme_is_refused_with_the_list_of_supported_ones() -> None:
    with pytest.raises(StorageError) as caught:
        scheme_of("ftp://example.org/taxi.csv")
    assert str(caught.value) == (
        "unsupported scheme 'ftp' in ftp://example.org/taxi.csv: supported schemes are "
        "file://, gs://, s3://, http://, https:// (or a plain local path)"
    )


def test_download_refuses_an_unsupported_scheme_before_writing_anything(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported scheme 'ftp'"):
        download("ftp://example.org/taxi.csv", tmp_path / "out" / "taxi.csv")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("uri", ["s3://bucket-only", "gs://bucket-only/", "s3://bucket/folder/"])
def test_a_bucket_uri_that_names_no_object_is_refused(uri: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"^{uri} names no object"):
        download(uri, tmp_path / "out", StorageConfig(s3_endpoint="http://127.0.0.1:9"))
    assert files_in(tmp_path) == []


def test_from_env_reads_the_aws_variables() -> None:
    config = StorageConfig.from_env(
        {
            "AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000",
            "AWS_ACCESS_KEY_ID": "minio",
            "AWS_SECRET_ACCESS_KEY": "minio123",
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    assert config == StorageConfig(
        s3_endpoint="http://minio-service.kubeflow:9000",
        s3_access_key="minio",
        s3_secret_key="minio123",
        s3_region="eu-west-1",
    )


def test_from_env_falls_back_to_kserve_s3_endpoint_and_the_default_region() -> None:
    # KServe's S3_ENDPOINT has no scheme; S3_USE_HTTPS=0 means plain http.
    config = StorageConfig.from_env(
        {
            "S3_ENDPOINT": "minio-service.kubeflow:9000",
            "S3_USE_HTTPS": "0",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    assert config.s3_endpoint == "http://minio-service.kubeflow:9000"
    assert config.s3_region == "us-east-1"
    assert StorageConfig.from_env({"S3_ENDPOINT": "s3.example.org"}).s3_endpoint == (
        "https://s3.example.org"
    )


def test_from_env_prefers_aws_endpoint_url_over_s3_endpoint() -> None:
    config = StorageConfig.from_env(
        {"AWS_ENDPOINT_URL": "http://seaweedfs:8333", "S3_ENDPOINT": "minio:9000"}
    )
    assert config.s3_endpoint == "http://seaweedfs:8333"


def test_from_env_with_nothing_set_means_aws_s3_and_empty_values_count_as_unset() -> None:
    assert StorageConfig.from_env({}) == StorageConfig()
    assert StorageConfig.from_env({"AWS_ENDPOINT_URL": "", "AWS_REGION": " "}) == StorageConfig()


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-process")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-the-process")
    assert StorageConfig.from_env().s3_endpoint == "http://127.0.0.1:9000"
    assert StorageConfig.from_env().s3_access_key == "from-the-process"
    assert StorageConfig.from_env().s3_secret_key == "secret-from-the-process"


def test_a_config_never_prints_its_secret_key() -> None:
    config = StorageConfig(s3_access_key="minio", s3_secret_key="do-not-log-me")
    assert "do-not-log-me" not in repr(config)
    assert "minio" in repr(config)


def test_an_s3_endpoint_with_a_path_is_refused(tmp_path: Path) -> None:
    config = StorageConfig(s3_endpoint="http://127.0.0.1:9000/minio")
    with pytest.raises(StorageError, match="S3 endpoint 'http://127.0.0.1:9000/minio' is not"):
        download("s3://bucket/model.pt", tmp_path / "model.pt", config)


# --- local files ---------------------------------------------------------------------------


def test_local_round_trip_copies_the_bytes_and_returns_their_sha256(tmp_path: Path) -> None:
    data = payload(3 * MiB + 17)
    (tmp_path / "model.pt").write_bytes(data)

    upload(tmp_path / "model.pt", str(tmp_path / "store" / "run-1" / "model.pt"))
    digest = download(str(tmp_path / "store" / "run-1" / "model.pt"), tmp_path / "back.pt")

    assert (tmp_path / "back.pt").read_bytes() == data
    assert digest == sha256(data)
    assert files_in(tmp_path / "store" / "run-1") == ["model.pt"]


def test_download_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "new.csv").write_bytes(b"new\n")
    (tmp_path / "dest.csv").write_bytes(b"an older and longer content\n")
    assert download(str(tmp_path / "new.csv"), tmp_path / "dest.csv") == sha256(b"new\n")
    assert (tmp_path / "dest.csv").read_bytes() == b"new\n"


def test_a_file_uri_is_a_local_path_with_percent_encoding(tmp_path: Path) -> None:
    (tmp_path / "taxi trips.csv").write_bytes(b"fare,tips\n")
    uri = (tmp_path / "taxi trips.csv").as_uri()  # file:///.../taxi%20trips.csv
    assert download(uri, tmp_path / "copy.csv") == sha256(b"fare,tips\n")
    assert (tmp_path / "copy.csv").read_bytes() == b"fare,tips\n"


def test_a_missing_local_file_is_not_found(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such.csv")
    with pytest.raises(StorageError) as caught:
        download(missing, tmp_path / "dest.csv")
    assert str(caught.value) == f"{missing} not found"
    assert files_in(tmp_path) == []


def test_a_failed_download_leaves_the_previous_file_and_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "dest.csv").write_bytes(b"previous\n")
    with pytest.raises(StorageError, match="not found"):
        download(str(tmp_path / "no-such.csv"), tmp_path / "dest.csv")
    assert (tmp_path / "dest.csv").read_bytes() == b"previous\n"
    assert files_in(tmp_path) == ["dest.csv"]


def test_a_directory_cannot_be_downloaded(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(StorageError, match="is a directory, not a file"):
        download(str(tmp_path / "folder"), tmp_path / "dest")
    assert files_in(tmp_path) == ["folder"]


def test_upload_of_a_missing_source_names_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        upload(tmp_path / "no-such.pt", str(tmp_path / "store" / "model.pt"))
    assert str(caught.value) == (
        f"cannot upload {tmp_path / 'no-such.pt'} to {tmp_path / 'store' / 'model.pt'}: "
        f"{tmp_path / 'no-such.pt'} not found"
    )
    assert files_in(tmp_path) == []


def test_http_uris_are_read_only(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    with pytest.raises(StorageError) as caught:
        upload(tmp_path / "model.pt", "https://example.org/model.pt")
    assert str(caught.value) == (
        "cannot upload to https://example.org/model.pt: http(s) URIs are read-only"
    )


# --- s3:// (moto) --------------------------------------------------------------------------


@pytest.mark.servers
def test_s3_round_trip_of_a_multi_part_object(s3_config: StorageConfig, tmp_path: Path) -> None:
    # 12 MiB: minio uploads it in parts and the download streams in 1 MiB chunks.
    data = payload(12 * MiB, seed=1)
    (tmp_path / "model.pt").write_bytes(data)
    uri = f"s3://{S3_BUCKET}/runs/run-1/model.pt"

    upload(tmp_path / "model.pt", uri, s3_config)
    digest = download(uri, tmp_path / "back" / "model.pt", s3_config)

    assert digest == sha256(data)
    assert (tmp_path / "back" / "model.pt").read_bytes() == data


@pytest.mark.servers
def test_s3_missing_object_is_not_found_and_leaves_no_file(
    s3_config: StorageConfig, tmp_path: Path
) -> None:
    uri = f"s3://{S3_BUCKET}/runs/no-such-run/model.pt"
    with pytest.raises(StorageError) as caught:
        download(uri, tmp_path / "model.pt", s3_config)
    assert str(caught.value) == f"{uri} not found"
    assert files_in(tmp_path) == []


@pytest.mark.servers
def test_s3_missing_bucket_is_named(s3_config: StorageConfig, tmp_path: Path) -> None:
    uri = "s3://no-such-bucket/model.pt"
    with pytest.raises(StorageError) as caught:
        download(uri, tmp_path / "model.pt", s3_config)
    assert str(caught.value) == f"{uri} not found: bucket 'no-such-bucket' does not exist"

    (tmp_path / "model.pt").write_bytes(b"weights")
    with pytest.raises(StorageError) as caught:
        upload(tmp_path / "model.pt", uri, s3_config)
    assert str(caught.value) == (
        f"cannot upload to {uri}: bucket 'no-such-bucket' does not exist"
    )


# --- gs:// (gcp-storage-emulator) -----------------------------------------------------------


@pytest.mark.servers
def test_gs_round_trip_of_a_resumable_upload(gcs_emulator: str, tmp_path: Path) -> None:
    # 9 MiB is over google-cloud-storage's 8 MiB multipart limit, so it uploads resumably.
    data = payload(9 * MiB, seed=2)
    (tmp_path / "model.pt").write_bytes(data)
    uri = f"gs://{GS_BUCKET}/runs/run-1/model.pt"

    upload(tmp_path / "model.pt", uri)
    digest = download(uri, tmp_path / "back.pt")

    assert digest == sha256(data)
    assert (tmp_path / "back.pt").read_bytes() == data


@pytest.mark.servers
def test_gs_missing_object_is_not_found_and_leaves_no_file(
    gcs_emulator: str, tmp_path: Path
) -> None:
    uri = f"gs://{GS_BUCKET}/runs/no-such-run/model.pt"
    with pytest.raises(StorageError) as caught:
        download(uri, tmp_path / "model.pt")
    assert str(caught.value) == f"{uri} not found"
    assert files_in(tmp_path) == []


@pytest.mark.servers
def test_gs_upload_to_a_missing_bucket_names_it(gcs_emulator: str, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    with pytest.raises(StorageError) as caught:
        upload(tmp_path / "model.pt", "gs://no-such-bucket/model.pt")
    assert str(caught.value) == (
        "cannot upload to gs://no-such-bucket/model.pt: bucket 'no-such-bucket' does not exist"
    )


# --- http(s):// ----------------------------------------------------------------------------


@pytest.mark.servers
def test_http_download_returns_the_sha256_of_the_bytes(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_root
    data = payload(MiB + 5, seed=3)
    (root / "taxi.csv").write_bytes(data)

    assert download(f"{base}/taxi.csv", tmp_path / "taxi.csv") == sha256(data)
    assert (tmp_path / "taxi.csv").read_bytes() == data


@pytest.mark.servers
def test_http_download_streams_instead_of_holding_the_object_in_memory(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_root
    data = payload(24 * MiB, seed=4)
    (root / "large.bin").write_bytes(data)
    del data

    tracemalloc.start()
    try:
        digest = download(f"{base}/large.bin", tmp_path / "large.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest == sha256((root / "large.bin").read_bytes())
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB for a 24 MiB object: not streamed"


@pytest.mark.servers
def test_http_404_is_not_found(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_root
    with pytest.raises(StorageError) as caught:
        download(f"{base}/no-such.csv", tmp_path / "taxi.csv")
    assert str(caught.value) == f"{base}/no-such.csv not found (HTTP 404)"
    assert files_in(tmp_path) == []


@pytest.mark.servers
def test_http_server_error_names_the_status(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_root
    with pytest.raises(StorageError) as caught:
        download(f"{base}/broken", tmp_path / "taxi.csv")
    assert str(caught.value) == f"cannot download {base}/broken: HTTP 500 Internal Server Error"
    assert files_in(tmp_path) == []


@pytest.mark.servers
def test_http_body_cut_short_leaves_no_partial_file(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = http_root
    (tmp_path / "model.pt").write_bytes(b"previous")
    with pytest.raises(StorageError, match=f"^cannot download {base}/cut-short: "):
        download(f"{base}/cut-short", tmp_path / "model.pt")
    assert (tmp_path / "model.pt").read_bytes() == b"previous"
    assert files_in(tmp_path) == ["model.pt"]
