"""The MLflow model registry as Slipway uses it: versions with lineage, and two aliases.

A trained model is registered as a version of a registered model (one per problem), whose source is
the `model/` folder its training run logged (safetensors + JSON, next to its model card). Registry
stages are deprecated in MLflow, so the lifecycle is carried by aliases only:

- `challenger`: the version registered last, blessed or not;
- `champion`: the version that serves. `promote` moves it; the version it leaves is pushed on a
  history kept as a registered-model tag, so `rollback` returns to exactly the champion before,
  not merely to "the version number below" (which may never have served).

    registry = ModelRegistry.connect(tracking_uri)            # fails fast if the server is down
    version = registry.register("chicago_taxi", run_id, tags)  # -> challenger
    registry.promote("chicago_taxi", version.version)          # -> champion, previous recorded
    registry.rollback("chicago_taxi")                          # -> the previous champion again

Every call goes through an explicit `MlflowClient` (tracking and registry URI the same, MLflow's
default); nothing touches MLflow's process-wide state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import requests
from mlflow.artifacts import download_artifacts
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from slipway.storage import boto3_environment

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT_PATH = "model"  # where the trainer logs the model folder in its run
MODEL_CARD_FILE = "MODEL_CARD.md"
HISTORY_TAG = "slipway.champion_history"
HISTORY_LIMIT = 50  # previous champions remembered; a tag value holds at most 5000 characters
REACHABLE_TIMEOUT_S = 5.0
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked: unreachable, no such model, version or alias."""


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """One model version as read back from the registry."""

    name: str
    version: str
    source: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """`models:/name/version`: how MLflow, and the deploy step, address this exact version."""
        return f"models:/{self.name}/{self.version}"

    @classmethod
    def of(cls, version: ModelVersion) -> RegisteredVersion:
        return cls(name=version.name, version=str(version.version), source=version.source,
                   run_id=version.run_id or None, aliases=tuple(version.aliases or ()), tags=dict(version.tags or {}))


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """What `promote` or `rollback` did: `champion` moved from `previous` (None: there was none) to `current`."""

    name: str
    previous: str | None
    current: str

    def describe(self) -> str:
        before = f"version {self.previous}" if self.previous else "no champion"
        return f"{self.name}: {CHAMPION} moved from {before} to version {self.current}"


class ModelRegistry:
    """Registration and alias moves against one MLflow tracking/registry URI."""

    def __init__(self, client: MlflowClient, tracking_uri: str) -> None:
        self._client = client
        self.tracking_uri = tracking_uri

    @classmethod
    def connect(cls, tracking_uri: str) -> ModelRegistry:
        """A registry client, after checking that the registry answers.

        MLflow's own client retries a refused connection with backoff for minutes before it
        fails; a registry that is down should fail the step at once, and before anything is
        written, so that a registration is never left half done.
        """
        _check_reachable(tracking_uri)
        return cls(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), tracking_uri)

    def register(
        self, name: str, run_id: str, tags: Mapping[str, str], card: Callable[[RegisteredVersion], str] | None = None
    ) -> RegisteredVersion:
        """A new version of `name` from the run's logged model folder, tagged, with the `challenger` alias.

        `card(version)`, when given, renders the model card that is logged as `MODEL_CARD.md` beside
        the weights. All or nothing: if any step after the version's creation fails, the version (and
        a registered model created for it) is deleted again before the error propagates.
        """
        source = f"{self._run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
        created_model = self._ensure_registered_model(name)
        created: ModelVersion | None = None
        try:
            created = self._client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
            registered = RegisteredVersion.of(created)
            if card is not None:
                self._log_card(run_id, card(registered))
            self._client.set_registered_model_alias(name, CHALLENGER, registered.version)
        except BaseException:
            self._undo_registration(name, created, created_model)
            raise
        log.info("registered %s (%s) from run %s", registered.uri, CHALLENGER, run_id)
        return self.version(name, registered.version)

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags a training run recorded (its lineage), for the version to repeat."""
        return dict(self._run(run_id).data.tags)

    def version(self, name: str, version: str) -> RegisteredVersion:
        """The version, or a RegistryError that lists the versions that do exist."""
        try:
            return RegisteredVersion.of(self._client.get_model_version(name, str(version)))
        except MlflowException as error:
            if error.error_code not in _MISSING:
                raise
        known = self.versions(name)
        raise RegistryError(
            f"registered model {name!r} has no version {version!r}; versions: {[v.version for v in known] or 'none'}"
        ) from None

    def resolve(self, uri: str) -> RegisteredVersion:
        """`models:/NAME/VERSION` or `models:/NAME@ALIAS`, as MLflow writes them, to the version it names."""
        if not uri.startswith("models:/"):
            raise RegistryError(f"{uri!r} is not a models:/NAME/VERSION or models:/NAME@ALIAS URI")
        path = uri.removeprefix("models:/").strip("/")
        if "@" in path:
            name, alias = path.split("@", 1)
            if (found := self.alias(name, alias)) is None:
                raise RegistryError(f"{uri}: no version of {name!r} holds the alias {alias!r} in {self.tracking_uri}")
            return found
        name, _, version = path.rpartition("/")
        if not name or not version.isdigit():
            raise RegistryError(f"{uri!r} is not a models:/NAME/VERSION or models:/NAME@ALIAS URI")
        return self.version(name, version)

    def versions(self, name: str) -> list[RegisteredVersion]:
        """All versions of `name`, oldest first; a RegistryError if the registered model does not exist."""
        self._registered_model(name)
        found = self._client.search_model_versions(f"name = '{_quoted(name)}'")
        return sorted((RegisteredVersion.of(v) for v in found), key=lambda v: int(v.version))

    def alias(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version holding `alias`, or None when no version holds it (or the model does not exist yet)."""
        try:
            return RegisteredVersion.of(self._client.get_model_version_by_alias(name, alias))
        except MlflowException as error:
            if error.error_code in _MISSING:
                return None
            raise

    def champion(self, name: str) -> RegisteredVersion | None:
        return self.alias(name, CHAMPION)

    def promote(self, name: str, version: str) -> AliasMove:
        """Makes `version` the champion; the champion it replaces goes on the rollback history."""
        target = self.version(name, version)
        previous = self.champion(name)
        if previous is not None and previous.version == target.version:
            log.info("%s is already the %s", target.uri, CHAMPION)
            return AliasMove(name, previous.version, target.version)
        if previous is not None:
            self._set_history(name, [*self._history(name), previous.version][-HISTORY_LIMIT:])
        self._client.set_registered_model_alias(name, CHAMPION, target.version)
        move = AliasMove(name, previous.version if previous else None, target.version)
        log.info("%s", move.describe())
        return move

    def rollback(self, name: str) -> AliasMove:
        """Moves the champion back to the champion before it, as recorded by `promote`."""
        current = self.champion(name)
        history = self._history(name)
        if current is None:
            raise RegistryError(f"registered model {name!r} has no {CHAMPION} to roll back from")
        if not history:
            raise RegistryError(
                f"registered model {name!r}: version {current.version} is the first {CHAMPION} on record; "
                "there is no previous champion to roll back to (promote a version instead)"
            )
        previous = history[-1]
        self.version(name, previous)  # a deleted version cannot be rolled back to: say so, move nothing
        self._client.set_registered_model_alias(name, CHAMPION, previous)
        self._set_history(name, history[:-1])
        self._client.set_model_version_tag(name, current.version, "slipway.rolled_back", "true")
        move = AliasMove(name, current.version, previous)
        log.info("rolled back: %s", move.describe())
        return move

    def download(self, version: RegisteredVersion, destination: Path) -> Path:
        """The version's model folder, copied to `destination`; returns the folder holding the files."""
        destination.mkdir(parents=True, exist_ok=True)
        # MLflow reads s3:// with its own boto3 client: give it the storage layer's endpoint and keys.
        with boto3_environment() if version.source.startswith("s3://") else contextlib.nullcontext():
            return Path(download_artifacts(artifact_uri=version.source, dst_path=str(destination),
                                           tracking_uri=self.tracking_uri))

    def _ensure_registered_model(self, name: str) -> bool:
        """Creates the registered model if missing; True when this call created it."""
        try:
            self._client.create_registered_model(name, description=f"Slipway model {name}")
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return False
        return True

    def _undo_registration(self, name: str, version: ModelVersion | None, created_model: bool) -> None:
        """Best effort: the caller's error is what matters, so a failing cleanup is only logged."""
        try:
            if version is not None:
                self._client.delete_model_version(name, version.version)
            if created_model:
                self._client.delete_registered_model(name)
        except MlflowException as error:
            log.error("could not undo the partial registration of %s: %s", name, error)

    def _log_card(self, run_id: str, card: str) -> None:
        with tempfile.TemporaryDirectory(prefix="slipway-card-") as tmp:
            path = Path(tmp) / MODEL_CARD_FILE
            path.write_text(card)
            # An s3:// artifact store is written by MLflow's own boto3 client (a no-op for other stores).
            with boto3_environment():
                self._client.log_artifact(run_id, str(path), MODEL_ARTIFACT_PATH)

    def _run(self, run_id: str) -> Run:
        try:
            return self._client.get_run(run_id)
        except MlflowException as error:
            if error.error_code in _MISSING:
                raise RegistryError(f"no MLflow run {run_id!r} in {self.tracking_uri} to register from") from None
            raise

    def _registered_model(self, name: str) -> RegisteredModel:
        try:
            return self._client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code in _MISSING:
                raise RegistryError(f"no registered model {name!r} in {self.tracking_uri}") from None
            raise

    def _history(self, name: str) -> list[str]:
        return json.loads(self._registered_model(name).tags.get(HISTORY_TAG, "[]"))

    def _set_history(self, name: str, history: list[str]) -> None:
        self._client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _check_reachable(tracking_uri: str) -> None:
    """An HTTP(S) server must answer `/health` in a few seconds; a SQLite file's folder must exist."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("http", "https"):
        try:
            response = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=REACHABLE_TIMEOUT_S)
        except requests.RequestException as error:
            raise RegistryError(
                f"MLflow registry at {tracking_uri} is unreachable ({type(error).__name__}: {error}); "
                "nothing was registered or moved"
            ) from None
        if response.status_code >= 400:
            raise RegistryError(
                f"MLflow registry at {tracking_uri} answered /health with HTTP {response.status_code}; "
                "nothing was registered or moved"
            )
    elif parsed.scheme == "sqlite":
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        if not database.parent.is_dir():
            raise RegistryError(f"MLflow registry {tracking_uri}: folder {database.parent} does not exist")
    elif parsed.scheme not in ("databricks", "postgresql", "mysql", "file", ""):
        raise RegistryError(f"{tracking_uri!r} is not an MLflow tracking/registry URI (http(s)://, sqlite:///, ...)")
