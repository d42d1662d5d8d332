"""Online inference: the project's active model, loaded once per process and kept by version id.

A promotion makes a new version active; the next request sees the new id, loads that artifact
(after checking its hash, see artifacts.load_verified) and drops the project's older model from
memory. Every request is recorded in PredictLog with its latency and whether it succeeded.
"""
import threading
import time
from dataclasses import dataclass

from config import metrics

from . import artifacts, training
from .models import ModelVersion, PredictLog

_models: dict[int, object] = {}  # version id -> fitted model
_project_of: dict[int, int] = {}  # version id -> project id
_lock = threading.Lock()


class NoActiveModel(Exception):
    pass


class ModelUnavailable(Exception):
    """The active version's artifact is missing or fails its hash check."""


@dataclass
class ServedPrediction:
    version_id: int
    version_number: int
    algorithm: str
    probabilities: dict[str, float]  # category name -> probability, every category of the model
    top_category: str
    latency_ms: float


def active_version(project_id: int) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(project_id=project_id, active=True)
        .only("id", "number", "project_id", "algorithm", "artifact_path", "artifact_sha256")
        .first()
    )


def model_for(version: ModelVersion):
    """The fitted model of `version`, from this process's cache or loaded (and verified) once."""
    model = _models.get(version.pk)
    if model is not None:
        return model
    with _lock:
        if version.pk not in _models:
            try:
                loaded = artifacts.load_verified(version.artifact_path, version.artifact_sha256)
            except artifacts.ArtifactError as error:
                raise ModelUnavailable(str(error)) from error
            for old, project_id in list(_project_of.items()):
                if project_id == version.project_id:  # one model per project in memory
                    _models.pop(old, None)
                    _project_of.pop(old, None)
            _models[version.pk], _project_of[version.pk] = loaded, version.project_id
        return _models[version.pk]


def forget_all() -> None:
    """Empty this process's cache (tests; a worker picks models up again on the next request)."""
    with _lock:
        _models.clear()
        _project_of.clear()


def predict(project, title: str, text: str, user=None, endpoint: str = "predict") -> ServedPrediction:
    """Score one text with the project's active model; logs latency and failures."""
    started = time.perf_counter()
    version = None
    try:
        version = active_version(project.pk)
        if version is None:
            raise NoActiveModel(
                f"Project {project.slug} has no trained model yet: an admin can train one on the model page."
            )
        model = model_for(version)
        proba = model.predict_proba([training.item_text(title, text)])[0]
    except Exception:
        _log(project, version, endpoint, started, ok=False, user=user)
        raise
    probabilities = {name: round(float(p), 4) for name, p in zip(model.classes_, proba, strict=True)}
    latency = _log(project, version, endpoint, started, ok=True, user=user)
    return ServedPrediction(
        version_id=version.pk,
        version_number=version.number,
        algorithm=version.algorithm,
        probabilities=probabilities,
        top_category=model.classes_[int(proba.argmax())],
        latency_ms=latency,
    )


def _log(project, version, endpoint: str, started: float, ok: bool, user=None) -> float:
    latency = round((time.perf_counter() - started) * 1000, 3)
    PredictLog.objects.create(
        project=project, model_version=version, endpoint=endpoint, latency_ms=latency, ok=ok,
        user=user if user is not None and user.is_authenticated else None,
    )
    if ok:
        metrics.predict_observed(latency / 1000, endpoint)
    return latency
