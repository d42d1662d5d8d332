"""Live progress of an import, for the import page's progress bar.

An import runs inside its upload's request, all or nothing in one transaction, so its progress
cannot live in the database: no other connection sees a row before the commit, and on SQLite the
write would wait behind the import's own lock. It goes to a small JSON file per import instead,
named by a random token that the page put in the form's URL; the page polls it with htmx while
the browser waits for the upload's answer (a page keeps running until the next one arrives).

Two phases, each measured in bytes: the upload (received by `ProgressUploadHandler`, before the
view runs) and the import (the file read by the importer through `CountingReader`); then the
rows still being written and committed.
"""
import io
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler

WRITE_EVERY = 0.25  # seconds between writes of the state file: cheap, and often enough for a 1 s poll
KEEP_SECONDS = 24 * 3600
PHASES = {"uploading": "Uploading", "reading": "Reading and checking rows", "saving": "Saving the items",
          "done": "Done", "failed": "Failed"}


def new_token() -> str:
    return secrets.token_hex(16)


def folder() -> Path:
    """Beside the exports' folder, which every web process already shares."""
    path = Path(settings.LABELLOOP.get("IMPORT_PROGRESS_DIR") or Path(settings.LABELLOOP["EXPORT_DIR"]).parent / "import-progress")
    path.mkdir(parents=True, exist_ok=True)
    return path


def valid_token(token: str) -> bool:
    return len(token) == 32 and all(c in "0123456789abcdef" for c in token)


@dataclass
class ImportProgress:
    token: str
    project_id: int
    user_id: int
    filename: str = ""
    phase: str = "uploading"  # uploading → reading → saving → done | failed
    done: int = 0  # bytes
    total: int = 0
    message: str = ""
    updated_at: float = field(default_factory=time.time)

    @property
    def percent(self) -> int:
        if self.phase in ("saving", "done"):
            return 100
        return min(99, int(100 * self.done / self.total)) if self.total else 0

    @property
    def label(self) -> str:
        return PHASES.get(self.phase, self.phase)

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")

    def save(self) -> None:
        if not valid_token(self.token):
            raise ValueError("Not an import progress token.")
        self.updated_at = time.time()
        path = folder() / f"{self.token}.json"
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(partial, path)  # a poll never reads half a file

    @classmethod
    def load(cls, token: str) -> "ImportProgress | None":
        if not valid_token(token):
            return None
        try:
            return cls(**json.loads((folder() / f"{token}.json").read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError, TypeError):
            return None


class Reporter:
    """Updates one import's progress file, at most every WRITE_EVERY seconds unless forced."""

    def __init__(self, progress: ImportProgress):
        self.progress = progress
        self._written = 0.0

    def update(self, phase: str, done: int | None = None, total: int | None = None, message: str = "", force: bool = False) -> None:
        p = self.progress
        p.phase, p.message = phase, message or p.message
        if done is not None:
            p.done = done
        if total is not None:
            p.total = total
        now = time.monotonic()
        if force or now - self._written >= WRITE_EVERY:
            self._written = now
            p.save()


class ProgressUploadHandler(FileUploadHandler):
    """Counts the upload's bytes as they arrive and passes them on to the usual handlers."""

    def __init__(self, reporter: Reporter, request=None):
        super().__init__(request)
        self.reporter = reporter

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.reporter.update("uploading", 0, content_length or 0, force=True)
        # the other handlers still parse the body

    def receive_data_chunk(self, raw_data, start):
        self.reporter.update("uploading", start + len(raw_data))
        return raw_data

    def file_complete(self, file_size):
        """Nothing: the next handler builds the file."""


class CountingReader(io.RawIOBase):
    """The uploaded file, reporting how much of it the importer has read."""

    def __init__(self, stream, size: int, reporter: Reporter):
        self._stream, self._size, self._read, self.reporter = stream, size, 0, reporter
        reporter.update("reading", 0, size, force=True)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._read += len(data)
        if data:
            self.reporter.update("reading", self._read, self._size)
        else:  # the whole file is read: what is left is writing and committing
            self.reporter.update("saving", self._size, self._size, force=True)
        return data


def sweep(now: float | None = None) -> int:
    """Delete progress files older than KEEP_SECONDS (a page view's housekeeping)."""
    now, removed = now or time.time(), 0
    for path in folder().glob("*.json"):
        try:
            if now - path.stat().st_mtime > KEEP_SECONDS:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed
