"""Storage as a cluster step meets it: credentials from the environment or a mounted Secret, and every step
that reads or writes object storage, run against the local S3 API (moto) and GCS emulator.

The credential tests pin the order of `StorageConfig.from_env` (slipway/storage.py's docstring) and the
wording of its errors, which name the variable or file and what was expected. The end-to-end tests take
each step that touches object storage on a cluster, give it only what a pod would have (URIs and
environment variables, no config objects) and check the bytes that come back: ingest from s3:// and gs://,
the Feast registry on s3://, and MLflow artifacts on s3://, logged by a client and by a server.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import GS_BUCKET, S3_BUCKET, payload, running_mlflow_server, sha256

from slipway.storage import StorageConfig, StorageError, boto3_environment, download, sha256_of, upload

# Every variable that could carry S3 or boto3 configuration into a test from the machine or another test.
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    "S3_ENDPOINT", "S3_USE_HTTPS", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "SLIPWAY_STORAGE_SECRET_DIR",
    "FEAST_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL",
)


@pytest.fixture
def clean_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No S3 configuration but what the test sets, and a boto3 that has cached none.

    boto3's default session keeps the first credentials it found for the life of the process, and
    MLflow caches its boto3 clients: both are reset so that a test sees only its own configuration,
    and a credential that never reached boto3 fails the test instead of being found in a cache.
    """
    import boto3
    from mlflow.store.artifact import s3_artifact_repo

    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # No ~/.aws files either: boto3 would otherwise find credentials that this machine happens to have.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    s3_artifact_repo._cached_get_s3_client.cache_clear()
    return monkeypatch


def secret_dir(folder: Path, files: dict[str, str]) -> Path:
    """A Secret as Kubernetes mounts it: each key a symlink into a hidden, timestamped folder."""
    data = folder / "..2026_11_24_08_00_00.000000001"
    data.mkdir(parents=True)
    (folder / "..data").symlink_to(data.name)
    for key, value in files.items():
        (data / key).write_text(value)
        (folder / key).symlink_to(Path("..data") / key)
    return folder


def mount_secret(env: pytest.MonkeyPatch, folder: Path, config: StorageConfig, *, kfp_names: bool = False) -> Path:
    """`config`'s keys and endpoint in a mounted Secret named by SLIPWAY_STORAGE_SECRET_DIR, and nothing in env."""
    access, secret = ("accesskey", "secretkey") if kfp_names else ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    files = {access: f"{config.s3_access_key}\n", secret: f"{config.s3_secret_key}\n"}
    files["AWS_ENDPOINT_URL"] = f"{config.s3_endpoint}\n"
    env.setenv("SLIPWAY_STORAGE_SECRET_DIR", str(secret_dir(folder, files)))
    return folder


# --- which credentials win ------------------------------------------------------------------------------


def test_the_environment_wins_over_a_mounted_secret_and_the_two_are_never_mixed(tmp_path: Path) -> None:
    folder = secret_dir(tmp_path / "secret", {"AWS_ACCESS_KEY_ID": "from-file", "AWS_SECRET_ACCESS_KEY": "file-secret",
                                              "AWS_SESSION_TOKEN": "file-token"})
    config = StorageConfig.from_env({"AWS_ACCESS_KEY_ID": "from-env", "AWS_SECRET_ACCESS_KEY": "env-secret",
                                     "SLIPWAY_STORAGE_SECRET_DIR": str(folder)})
    assert (config.s3_access_key, config.s3_secret_key, config.s3_session_token) == ("from-env", "env-secret", None)


def test_a_mounted_secret_with_the_aws_key_names_gives_keys_token_and_endpoint(tmp_path: Path) -> None:
    folder = secret_dir(tmp_path / "secret", {
        "AWS_ACCESS_KEY_ID": "minio\n", "AWS_SECRET_ACCESS_KEY": "minio123\n", "AWS_SESSION_TOKEN": "token\n",
        "AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000\n",
    })
    config = StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(folder), "AWS_REGION": "eu-west-1"})
    assert config == StorageConfig(s3_endpoint="http://minio-service.kubeflow:9000", s3_access_key="minio",
                                   s3_secret_key="minio123", s3_region="eu-west-1", s3_session_token="token")


def test_kfps_own_minio_secret_can_be_mounted_as_it_is(tmp_path: Path) -> None:
    # mlpipeline-minio-artifact holds `accesskey` and `secretkey`; the endpoint comes from the environment.
    folder = secret_dir(tmp_path / "secret", {"accesskey": "minio", "secretkey": "minio123"})
    config = StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(folder),
                                     "S3_ENDPOINT": "minio-service.kubeflow:9000", "S3_USE_HTTPS": "0"})
    assert config == StorageConfig(s3_endpoint="http://minio-service.kubeflow:9000", s3_access_key="minio",
                                   s3_secret_key="minio123")


def test_the_environments_endpoint_wins_over_the_secrets(tmp_path: Path) -> None:
    folder = secret_dir(tmp_path / "secret", {"accesskey": "minio", "secretkey": "minio123",
                                              "AWS_ENDPOINT_URL": "http://from-the-secret:9000"})
    env = {"SLIPWAY_STORAGE_SECRET_DIR": str(folder), "AWS_ENDPOINT_URL": "http://seaweedfs.kubeflow:8333"}
    assert StorageConfig.from_env(env).s3_endpoint == "http://seaweedfs.kubeflow:8333"


def test_with_no_credentials_anywhere_requests_are_anonymous() -> None:
    config = StorageConfig.from_env({"AWS_ENDPOINT_URL": "http://minio:9000"})
    assert (config.s3_access_key, config.s3_secret_key) == (None, None)


def test_a_config_read_from_a_secret_never_prints_its_secret_or_token(tmp_path: Path) -> None:
    folder = secret_dir(tmp_path / "secret", {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "do-not-log-me",
                                              "AWS_SESSION_TOKEN": "nor-me"})
    text = repr(StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(folder)}))
    assert "do-not-log-me" not in text and "nor-me" not in text
    assert "minio" in text


# --- what a misconfiguration says -----------------------------------------------------------------------


@pytest.mark.parametrize(("have", "lack"), [("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                                            ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")])
def test_half_a_key_pair_in_the_environment_names_the_missing_variable(have: str, lack: str) -> None:
    with pytest.raises(StorageError) as caught:
        StorageConfig.from_env({have: "value"})
    assert str(caught.value) == (
        f"S3 credentials: {have} is set but {lack} is not: set both, or neither and mount the storage Secret "
        "at the folder that SLIPWAY_STORAGE_SECRET_DIR names"
    )


def test_a_secret_folder_that_is_not_mounted_is_named_with_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    with pytest.raises(StorageError) as caught:
        StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(missing)})
    assert str(caught.value) == (
        f"S3 credentials: SLIPWAY_STORAGE_SECRET_DIR names {missing}, which is not a folder: mount the storage "
        "Secret there (files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or accesskey and secretkey), "
        "or unset SLIPWAY_STORAGE_SECRET_DIR"
    )


def test_a_secret_without_credentials_lists_the_expected_keys_and_the_ones_it_has_but_no_values(
    tmp_path: Path,
) -> None:
    folder = secret_dir(tmp_path / "secret", {"username": "admin", "password": "do-not-log-me"})
    with pytest.raises(StorageError) as caught:
        StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(folder)})
    assert str(caught.value) == (
        f"S3 credentials: {folder} (from SLIPWAY_STORAGE_SECRET_DIR) holds no S3 credentials: expected files "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or accesskey and secretkey (the keys of the mounted Secret); "
        "found password, username"
    )


@pytest.mark.parametrize(("files", "have", "lack"), [
    ({"AWS_ACCESS_KEY_ID": "minio"}, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ({"secretkey": "minio123"}, "secretkey", "accesskey"),
])
def test_a_secret_with_half_a_key_pair_names_the_missing_key(
    tmp_path: Path, files: dict[str, str], have: str, lack: str
) -> None:
    folder = secret_dir(tmp_path / "secret", files)
    with pytest.raises(StorageError) as caught:
        StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(folder)})
    assert str(caught.value) == (
        f"S3 credentials: {folder} (from SLIPWAY_STORAGE_SECRET_DIR) has {have} but no {lack}: "
        "the Secret needs both keys"
    )


def test_an_empty_key_file_is_named(tmp_path: Path) -> None:
    folder = secret_dir(tmp_path / "secret", {"accesskey": "minio", "secretkey": "\n"})
    with pytest.raises(StorageError) as caught:
        StorageConfig.from_env({"SLIPWAY_STORAGE_SECRET_DIR": str(folder)})
    assert str(caught.value) == f"S3 credentials: {folder / 'secretkey'} (from SLIPWAY_STORAGE_SECRET_DIR) is empty"


# --- the credentials reach the wire ---------------------------------------------------------------------


@pytest.mark.servers
def test_s3_round_trip_with_only_a_mounted_secret(
    s3_config: StorageConfig, clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mount_secret(clean_aws, tmp_path / "secret", s3_config)
    data = payload(3 * 1024 * 1024 + 7, seed=11)
    (tmp_path / "model.bin").write_bytes(data)
    uri = f"s3://{S3_BUCKET}/cluster/{tmp_path.name}/model.bin"

    upload(tmp_path / "model.bin", uri)  # no config passed: from the environment, i.e. the secret
    assert download(uri, tmp_path / "back" / "model.bin") == sha256(data)
    assert (tmp_path / "back" / "model.bin").read_bytes() == data


class _RecordingS3(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the same object and records each request's method, path and headers."""

    body = b"trip_id,fare\n1,9.25\n"
    seen: list[tuple[str, str, dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.command, self.path, {name.lower(): value for name, value in self.headers.items()}))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def signed_with(endpoint: str, request: tuple[str, str, dict[str, str]], access_key: str, secret_key: str) -> bool:
    """Whether an S3 request's SigV4 signature was made with this key pair (checked with botocore's signer)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    method, path, headers = request
    authorization = headers["authorization"]
    credential = authorization.split("Credential=")[1].split(",")[0]
    if not credential.startswith(f"{access_key}/"):
        return False
    region = credential.split("/")[2]
    names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    unsigned = AWSRequest(method=method, url=endpoint + path, headers={name: headers[name] for name in names})
    unsigned.context["timestamp"] = headers["x-amz-date"]

    class Signer(SigV4Auth):
        def payload(self, request: AWSRequest) -> str:
            return headers["x-amz-content-sha256"]

    signer = Signer(Credentials(access_key, secret_key), "s3", region)
    expected = signer.signature(signer.string_to_sign(unsigned, signer.canonical_request(unsigned)), unsigned)
    return authorization.endswith(f"Signature={expected}")


@pytest.mark.parametrize("kfp_names", [True, False], ids=["kfp-secret", "aws-secret-with-token"])
def test_requests_are_signed_with_the_key_pair_from_the_secret_not_anonymously(
    clean_aws: pytest.MonkeyPatch, tmp_path: Path, kfp_names: bool
) -> None:
    # moto accepts any signature, so a server that records the requests is what shows whose keys signed them.
    _RecordingS3.seen = []
    with serving(_RecordingS3) as endpoint:
        config = StorageConfig(s3_endpoint=endpoint, s3_access_key="ak-from-secret", s3_secret_key="sk-from-secret")
        folder = mount_secret(clean_aws, tmp_path / "secret", config, kfp_names=kfp_names)
        if not kfp_names:
            (folder / "..data" / "AWS_SESSION_TOKEN").write_text("token-from-secret\n")
            (folder / "AWS_SESSION_TOKEN").symlink_to(Path("..data") / "AWS_SESSION_TOKEN")
        clean_aws.setenv("AWS_REGION", "us-east-1")
        assert download("s3://bucket/trips.csv", tmp_path / "trips.csv") == sha256(_RecordingS3.body)
    assert _RecordingS3.seen, "no request reached the server"
    for request in _RecordingS3.seen:
        assert signed_with(endpoint, request, "ak-from-secret", "sk-from-secret")
        assert not signed_with(endpoint, request, "ak-from-secret", "another-secret")
        assert request[2].get("x-amz-security-token") == (None if kfp_names else "token-from-secret")


def test_boto3_environment_adds_what_the_secret_gives_keeps_what_env_sets_and_restores(
    clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = StorageConfig(s3_endpoint="http://minio:9000", s3_access_key="ak", s3_secret_key="sk")
    mount_secret(clean_aws, tmp_path / "secret", config)
    with boto3_environment():
        inside = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                           "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN")}
    assert inside == {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk",
                      "AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_SESSION_TOKEN": None}
    assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_ENDPOINT_URL_S3" not in os.environ

    clean_aws.setenv("AWS_ENDPOINT_URL", "http://seaweedfs:8333")  # boto3 reads it itself: not shadowed
    with boto3_environment():
        assert "AWS_ENDPOINT_URL_S3" not in os.environ
        assert os.environ["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert os.environ["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"


# --- GCS: a mounted service account key -----------------------------------------------------------------


def test_a_missing_service_account_key_file_is_named_with_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    key = tmp_path / "gcp" / "key.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(StorageError) as caught:
        download(f"gs://{GS_BUCKET}/taxi.csv", tmp_path / "taxi.csv")
    assert str(caught.value) == (
        f"cannot reach gs://{GS_BUCKET}/taxi.csv: GOOGLE_APPLICATION_CREDENTIALS names {key}, which does not exist: "
        "mount the service account key file there, or unset the variable to use the node's or Workload "
        "Identity's credentials"
    )
    assert not (tmp_path / "taxi.csv").exists()


@pytest.mark.parametrize("content", ["not json", json.dumps({"type": "service_account", "client_email": "x@y"})])
def test_an_unusable_service_account_key_file_is_named_with_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    key = tmp_path / "key.json"
    key.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(StorageError) as caught:
        upload(key, f"gs://{GS_BUCKET}/key.json")
    assert str(caught.value).startswith(
        f"cannot reach gs://{GS_BUCKET}/key.json: GOOGLE_APPLICATION_CREDENTIALS names {key}, which is not a usable "
        "Google Cloud credentials file (a service account key JSON is expected): "
    )


class _FakeGoogle(http.server.BaseHTTPRequestHandler):
    """Google's token endpoint and the GCS media download, enough to see which identity a client uses.

    The emulator accepts anonymous requests only, so it cannot show that a key file was used: this
    server issues a token for a signed JWT grant and serves the object only to that token.
    """

    token = "issued-for-the-service-account"
    body = b"trip_id,fare\n1,9.25\n"
    grants: list[str] = []

    def do_POST(self) -> None:
        form = self.rfile.read(int(self.headers["Content-Length"])).decode()
        fields = dict(pair.split("=", 1) for pair in form.split("&"))
        type(self).grants.append(fields["assertion"])
        self._answer(200, json.dumps({"access_token": self.token, "expires_in": 3600, "token_type": "Bearer"}).encode())

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._answer(401, b"{}")
        elif self.path.startswith(f"/download/storage/v1/b/{GS_BUCKET}/o/trips.csv"):
            self._answer(200, self.body)
        else:
            self._answer(404, b"{}")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_mounted_service_account_key_is_the_identity_gcs_requests_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    _FakeGoogle.grants = []
    with serving(_FakeGoogle) as google:
        key = {"type": "service_account", "project_id": "slipway", "private_key_id": "k1", "private_key": pem,
               "client_email": "pipeline-runner@slipway.iam.gserviceaccount.com", "client_id": "1",
               "token_uri": f"{google}/token"}
        (tmp_path / "key.json").write_text(json.dumps(key))
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
        monkeypatch.setenv("API_ENDPOINT_OVERRIDE", google)  # google-cloud-storage's endpoint, credentials as usual
        digest = download(f"gs://{GS_BUCKET}/trips.csv", tmp_path / "trips.csv")

    assert digest == sha256(_FakeGoogle.body)
    assert _FakeGoogle.grants, "the client never asked for a token"
    header, claims, signature = _FakeGoogle.grants[0].split(".")
    claims_json = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert claims_json["iss"] == key["client_email"]
    # Signed with the file's private key: the public half verifies it (raises if not).
    private_key.public_key().verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                                    f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())


# --- ingest from s3:// and gs:// -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingested_locally(taxi_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    from slipway.components.ingestion import ingest_source
    from slipway.problem import load_problem

    out = tmp_path_factory.mktemp("ingested-locally")
    result = ingest_source(str(taxi_csv), load_problem("chicago_taxi"), out / "train.parquet", out / "eval.parquet")
    return result, out / "train.parquet", out / "eval.parquet"


def assert_same_ingest(uri: str, taxi_csv: Path, out: Path, local: tuple[object, Path, Path]) -> None:
    """Ingest `uri` (the sample, uploaded there) and compare with ingesting the local file."""
    import dataclasses

    from slipway.components.ingestion import ingest_source
    from slipway.problem import load_problem

    result = ingest_source(uri, load_problem("chicago_taxi"), out / "train.parquet", out / "eval.parquet")
    expected, train, evaluation = local
    assert result.source_sha256 == sha256_of(taxi_csv)
    assert result.metadata("train")["source"] == uri
    assert dataclasses.replace(result, source_uri="") == dataclasses.replace(expected, source_uri="")  # type: ignore
    pd.testing.assert_frame_equal(pd.read_parquet(out / "train.parquet"), pd.read_parquet(train))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "eval.parquet"), pd.read_parquet(evaluation))


@pytest.mark.servers
def test_ingest_reads_an_s3_source_with_credentials_from_a_mounted_secret(
    s3_config: StorageConfig, clean_aws: pytest.MonkeyPatch, taxi_csv: Path, tmp_path: Path,
    ingested_locally: tuple[object, Path, Path],
) -> None:
    uri = f"s3://{S3_BUCKET}/sources/{tmp_path.name}/data.csv"
    upload(taxi_csv, uri, s3_config)
    mount_secret(clean_aws, tmp_path / "secret", s3_config, kfp_names=True)
    assert_same_ingest(uri, taxi_csv, tmp_path, ingested_locally)


@pytest.mark.servers
def test_ingest_reads_a_gs_source(gcs_emulator: str, taxi_csv: Path, tmp_path: Path,
                                  ingested_locally: tuple[object, Path, Path]) -> None:
    uri = f"gs://{GS_BUCKET}/sources/{tmp_path.name}/data.csv"
    upload(taxi_csv, uri)
    assert_same_ingest(uri, taxi_csv, tmp_path, ingested_locally)


# --- the Feast registry on object storage ----------------------------------------------------------------


def registry_views(path: Path) -> list[str]:
    """The feature views a Feast registry file holds, read as the protobuf it is."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    registry = Registry()
    registry.ParseFromString(path.read_bytes())
    return sorted(view.spec.name for view in registry.feature_views)


@pytest.mark.servers
def test_the_feast_registry_on_s3_with_credentials_only_from_a_mounted_secret(
    s3_config: StorageConfig, clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Feast's S3 registry is boto3's: with no AWS variable set, only our storage layer can hand it the Secret.
    from test_feature_store import AREA, COMPANY, PROBLEM, write_tables

    from slipway.components.feature_store import StoreConfig, apply, open_store

    mount_secret(clean_aws, tmp_path / "secret", s3_config, kfp_names=True)
    registry = f"s3://{S3_BUCKET}/feast/{tmp_path.name}/registry.pb"
    env = {"SLIPWAY_FEAST_REGISTRY": registry}

    apply(open_store(StoreConfig.from_env(tmp_path / "feast-apply-pod", env), PROBLEM), PROBLEM,
          write_tables(tmp_path / "tables"))
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"} & set(os.environ)
    download(registry, tmp_path / "registry.pb", s3_config)
    assert registry_views(tmp_path / "registry.pb") == [COMPANY, AREA]
    reader = open_store(StoreConfig.from_env(tmp_path / "serving-pod", env), PROBLEM)
    assert sorted(view.name for view in reader.list_feature_views()) == [COMPANY, AREA]


@pytest.mark.servers
def test_the_feast_registry_on_gcs(gcs_emulator: str, tmp_path: Path) -> None:
    from test_feature_store import AREA, COMPANY, PROBLEM, write_tables

    from slipway.components.feature_store import StoreConfig, apply, open_store

    registry = f"gs://{GS_BUCKET}/feast/{tmp_path.name}/registry.pb"
    env = {"SLIPWAY_FEAST_REGISTRY": registry}
    apply(open_store(StoreConfig.from_env(tmp_path / "feast-apply-pod", env), PROBLEM), PROBLEM,
          write_tables(tmp_path / "tables"))
    download(registry, tmp_path / "registry.pb")
    assert registry_views(tmp_path / "registry.pb") == [COMPANY, AREA]
    reader = open_store(StoreConfig.from_env(tmp_path / "serving-pod", env), PROBLEM)
    assert sorted(view.name for view in reader.list_feature_views()) == [COMPANY, AREA]


# --- MLflow artifacts on S3 ---------------------------------------------------------------------------


def model_folder(folder: Path) -> dict[str, str]:
    """A model folder as the trainer writes it (weights + JSON); returns each file's sha256."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload(2 * 1024 * 1024 + 3, seed=5))
    (folder / "preprocessing.json").write_text(json.dumps({"numeric": ["fare", "trip_miles"]}))
    return {path.name: sha256_of(path) for path in folder.iterdir()}


def digests(folder: Path) -> dict[str, str]:
    return {path.name: sha256_of(path) for path in folder.iterdir() if path.is_file()}


def direct_s3_tracking(tmp_path: Path, experiment: str, artifact_root: str) -> str:
    """A tracking store whose experiment keeps its artifacts at `artifact_root`, written by the client itself.

    This is what a client does against an `mlflow server --no-serve-artifacts --default-artifact-root s3://…`;
    a SQLite store with the experiment created on S3 runs the same client code without a server.
    """
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment(experiment, artifact_location=artifact_root)
    return uri


@pytest.mark.servers
def test_mlflow_logs_registers_and_downloads_a_model_on_s3_with_mlflows_own_endpoint_variable(
    s3_config: StorageConfig, clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig, TrainingRun

    clean_aws.setenv("MLFLOW_S3_ENDPOINT_URL", s3_config.s3_endpoint)
    clean_aws.setenv("AWS_ACCESS_KEY_ID", s3_config.s3_access_key)
    clean_aws.setenv("AWS_SECRET_ACCESS_KEY", s3_config.s3_secret_key)
    root = f"s3://{S3_BUCKET}/mlflow/{tmp_path.name}"
    tracking_uri = direct_s3_tracking(tmp_path, "cluster", root)
    expected = model_folder(tmp_path / "model")

    with TrainingRun.start(TrackingConfig(tracking_uri, "cluster"), "train", {"epochs": 1}, {}) as run:
        run.log_model_dir(tmp_path / "model")
    registry = ModelRegistry.connect(tracking_uri)
    version = registry.register("taxi", run.run_id, {})
    assert version.source.startswith(f"{root}/")
    folder = registry.download(version, tmp_path / "downloaded")

    assert digests(folder) == expected
    # The bytes are on S3 under the experiment's root, not in a local folder MLflow fell back to.
    key = f"{version.source}/model.safetensors"
    assert download(key, tmp_path / "on-s3.bin", s3_config) == expected["model.safetensors"]


@pytest.mark.servers
def test_training_logs_its_model_to_s3_with_credentials_only_from_a_mounted_secret(
    s3_config: StorageConfig, clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slipway.components.tracking import TrackingConfig, TrainingRun

    mount_secret(clean_aws, tmp_path / "secret", s3_config)  # keys and endpoint: no AWS_* or MLFLOW_S3_* set
    root = f"s3://{S3_BUCKET}/mlflow/{tmp_path.name}"
    tracking_uri = direct_s3_tracking(tmp_path, "cluster", root)
    expected = model_folder(tmp_path / "model")

    with TrainingRun.start(TrackingConfig(tracking_uri, "cluster"), "train", {}, {}) as run:
        run.log_model_dir(tmp_path / "model")

    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"} & set(os.environ)
    for name, digest in expected.items():
        uri = f"{root}/{run.run_id}/artifacts/model/{name}"
        assert download(uri, tmp_path / "on-s3" / name, s3_config) == digest


@pytest.fixture(scope="module")
def mlflow_server_on_s3(s3_config: StorageConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` proxying artifacts to s3://S3_BUCKET/mlflow-served (the cluster's layout): yields its URL.

    The server alone holds the S3 settings (MLFLOW_S3_ENDPOINT_URL and the keys, as its Deployment would
    from a Secret); its clients hold none.
    """
    root = tmp_path_factory.mktemp("mlflow-server-s3")
    env = {name: value for name, value in os.environ.items() if name not in AWS_VARIABLES}
    env.update({"MLFLOW_S3_ENDPOINT_URL": s3_config.s3_endpoint, "AWS_ACCESS_KEY_ID": s3_config.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": s3_config.s3_secret_key})
    with running_mlflow_server(root, f"s3://{S3_BUCKET}/mlflow-served", env) as url:
        yield url


@pytest.mark.servers
def test_an_mlflow_server_keeps_the_models_it_is_sent_on_s3(
    s3_config: StorageConfig, mlflow_server_on_s3: str, clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slipway.components.registry import ModelRegistry
    from slipway.components.tracking import TrackingConfig, TrainingRun

    expected = model_folder(tmp_path / "model")
    with TrainingRun.start(TrackingConfig(mlflow_server_on_s3, "cluster"), "train", {}, {}) as run:
        run.log_model_dir(tmp_path / "model")
    registry = ModelRegistry.connect(mlflow_server_on_s3)
    version = registry.register(f"taxi-{tmp_path.name}", run.run_id, {})
    folder = registry.download(version, tmp_path / "downloaded")

    assert digests(folder) == expected
    # mlflow-artifacts:/<experiment>/<run>/artifacts/model is s3://…/mlflow-served/<experiment>/<run>/artifacts/model.
    assert version.source.startswith("mlflow-artifacts:/")
    on_s3 = f"s3://{S3_BUCKET}/mlflow-served/{version.source.removeprefix('mlflow-artifacts:/').lstrip('/')}"
    assert download(f"{on_s3}/model.safetensors", tmp_path / "on-s3.bin", s3_config) == expected["model.safetensors"]
