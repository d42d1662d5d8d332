"""`manage.py export_gold`: output, files, exit codes and messages."""
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from labeling.importer import import_items

ROOT = Path(__file__).resolve().parent.parent
ITEMS = b"id,title,description,tag\nx-1,First,one text,mlops\nx-2,Second,two text,other\nx-3,Open,no label,\n"


@pytest.fixture
def labeled(project):
    import_items(project, io.BytesIO(ITEMS), "items.csv")
    return project


def _run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_gold", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_it_writes_csv_to_standard_output_and_the_summary_to_stderr(labeled):
    out, err = _run("--project", "test")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["id"] for row in rows] == ["x-1", "x-2"]
    assert "Exported 2 gold rows of 'test'" in err


@pytest.mark.django_db
def test_it_writes_labels_only_jsonl_to_a_file(labeled, tmp_path):
    target = tmp_path / "gold.jsonl"
    out, _err = _run("--project", "test", "--format", "jsonl", "--labels-only", "--out", str(target))
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"id": "x-1", "title": "First", "description": "one text", "tag": "mlops"},
        {"id": "x-2", "title": "Second", "description": "two text", "tag": "other"},
    ]
    assert f"to {target}" in out
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.django_db
def test_it_writes_parquet_to_a_file(labeled, tmp_path):
    import pyarrow.parquet as pq

    target = tmp_path / "gold.parquet"
    _run("--project", "test", "--format", "parquet", "--split", "all", "--out", str(target))
    table = pq.read_table(target)
    assert table.column("id").to_pylist() == ["x-1", "x-2"]
    assert table.column("source").to_pylist() == ["import", "import"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--project", "nope"], "No project 'nope'. Known projects: test."),
        (["--project", "test", "--format", "xml"], "Unknown format 'xml'; use one of csv, jsonl, parquet."),
        (["--project", "test", "--split", "test"], "Unknown split 'test'; use one of all, train, holdout."),
        (["--project", "test", "--format", "parquet"], "Parquet is binary: name a file with --out FILE.parquet."),
        (["--project", "test", "--out", "/no/such/folder/gold.csv"], "No such folder: /no/such/folder"),
    ],
)
def test_it_explains_what_is_wrong(labeled, args, message):
    with pytest.raises(CommandError) as refused:
        _run(*args)
    assert str(refused.value) == message


def _database_url() -> str:
    """The test database, as a URL a separate process can open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _manage(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": _database_url(), "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run(
        [sys.executable, "manage.py", "export_gold", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_it_exits_0_on_success_and_1_with_a_message_on_error(labeled, tmp_path):
    target = tmp_path / "gold.csv"
    done = _manage("--project", "test", "--labels-only", "--out", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text().splitlines()[0] == "id,title,description,tag"

    refused = _manage("--project", "nope")
    assert refused.returncode == 1
    assert "CommandError: No project 'nope'" in refused.stderr
    assert "Traceback" not in refused.stderr
