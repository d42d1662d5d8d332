"""Model artifacts on disk: written atomically, loaded only after their hash checks out.

joblib/pickle can run code when loading, so the app only ever loads files it wrote itself: the
SHA-256 recorded at write time must match the file, and the path must lie under MODEL_DIR.
"""
import hashlib
import os
import tempfile
import time
from pathlib import Path

import joblib
from django.conf import settings


class ArtifactError(Exception):
    pass


def model_dir() -> Path:
    path = Path(settings.LABELLOOP["MODEL_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_temporary(model, owner: str = "") -> tuple[Path, str]:
    """Dump `model` to a temporary file in the model folder; returns (path, sha256). `owner` (a
    run's label) goes in the name, so the leftovers of a run whose worker died can be found."""
    prefix = f"tmp-{owner}-" if owner else "tmp-"
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".joblib", dir=model_dir())
    with os.fdopen(fd, "wb") as out:
        joblib.dump(model, out, compress=3)
        out.flush()
        os.fsync(out.fileno())
    return Path(name), file_sha256(Path(name))


def publish(temporary: Path, final_name: str) -> Path:
    """Give a temporary artifact its final name (atomic rename in the same folder)."""
    final = model_dir() / final_name
    os.replace(temporary, final)
    return final


def discard(path: Path | str | None) -> None:
    if path and Path(path).exists():
        Path(path).unlink()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_verified(path: str, expected_sha256: str):
    resolved = Path(path).resolve()
    if model_dir().resolve() not in resolved.parents:
        raise ArtifactError(f"Refusing to load {path}: not in the model folder.")
    if not resolved.is_file():
        raise ArtifactError(f"Model file {path} is missing.")
    if not expected_sha256 or file_sha256(resolved) != expected_sha256:
        raise ArtifactError(f"Model file {path} does not match its recorded hash; refusing to load it.")
    return joblib.load(resolved)


def discard_temporaries_of(owner: str) -> int:
    """Remove the temporary files a run (see write_temporary) left when its worker was killed."""
    leftovers = list(model_dir().glob(f"tmp-{owner}-*.joblib"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def sweep_temporaries(max_age_seconds: int = 24 * 3600) -> int:
    """Remove temporary files left by a worker killed mid-run (a crash leaves nothing serving)."""
    removed = 0
    for path in model_dir().glob("tmp-*.joblib"):
        if time.time() - path.stat().st_mtime > max_age_seconds:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
