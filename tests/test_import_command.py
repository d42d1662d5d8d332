"""`manage.py import_items --project SLUG [--create] FILE`: all or nothing, errors name row and column."""
import io
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from labeling.models import GoldLabel, Item, Project

ROWS = "id,title,description,tag\nc1,First,first text,mlops\nc2,Second,second text,\nc3,Third,third text,\n"


@pytest.fixture
def items_file(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(ROWS)
    return path


def import_command(*args) -> str:
    out = io.StringIO()
    call_command("import_items", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_imports_a_file_and_says_what_it_did(project, items_file):
    output = import_command("--project", project.slug, str(items_file))
    assert "Imported 3 items into 'test' (0 duplicates skipped, 1 gold labels)" in output
    assert Item.objects.filter(project=project).count() == 3
    again = import_command("--project", project.slug, str(items_file))
    assert "Imported 0 items into 'test' (3 duplicates skipped, 0 gold labels)" in again


@pytest.mark.django_db
def test_it_creates_the_project_when_asked(items_file):
    import_command("--project", "fresh", "--create", str(items_file))
    project = Project.objects.get(slug="fresh")
    assert project.categories.count() == 4
    assert Item.objects.filter(project=project).count() == 3


@pytest.mark.django_db
def test_it_refuses_an_unknown_project_without_create(items_file):
    with pytest.raises(CommandError, match="No project 'nowhere'. Pass --create"):
        import_command("--project", "nowhere", str(items_file))
    assert not Project.objects.filter(slug="nowhere").exists()


@pytest.mark.django_db
def test_it_refuses_a_missing_file(project, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        import_command("--project", project.slug, str(tmp_path / "absent.csv"))


@pytest.mark.django_db
def test_a_bad_row_names_row_and_column_and_writes_nothing(project, items_file, tmp_path):
    import_command("--project", project.slug, str(items_file))
    before = (Item.objects.count(), GoldLabel.objects.count())
    bad = tmp_path / "bad.csv"
    bad.write_text("id,title,description,tag\n" + "".join(f"d{i},New {i},new text {i},\n" for i in range(3)) + "d4,Fourth,fourth text,astrology\n")
    with pytest.raises(CommandError) as caught:
        import_command("--project", project.slug, str(bad))
    message = str(caught.value)
    assert message.startswith("Nothing was imported from bad.csv: row 5, column 'tag': unknown label 'astrology'")
    assert (Item.objects.count(), GoldLabel.objects.count()) == before


@pytest.mark.django_db
def test_a_rejected_file_leaves_no_project_behind_under_create(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("title,description\nOne,text\nTwo,\"unclosed\n")
    with pytest.raises(CommandError, match="row 3"):
        import_command("--project", "made-for-it", "--create", str(bad))
    assert not Project.objects.filter(slug="made-for-it").exists()


def url_of_test_database() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_with_the_message_on_stderr(project, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "ok", "text": "fine"}\n{"title": "broken", "text": \n')
    done = subprocess.run(
        [sys.executable, "manage.py", "import_items", "--project", project.slug, str(bad)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": url_of_test_database(), "DB_CONN_MAX_AGE": "0"},
    )
    assert done.returncode != 0
    assert "Nothing was imported from bad.jsonl: line 2: not valid JSON" in done.stderr
    assert Item.objects.count() == 0
