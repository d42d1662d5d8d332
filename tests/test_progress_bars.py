"""Progress bars on the long jobs: an import's live progress (upload, reading, saving) polled by
htmx, and a retry button on a failed import, export and training run."""
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from labeling import import_progress
from labeling.export import ExportSpec, create_job, run_job
from labeling.import_progress import ImportProgress
from labeling.models import Item

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
ROWS = "title,description\n" + "".join(f"Paper {i},Pipelines for model deployment number {i}.\n" for i in range(400))


@pytest.fixture(autouse=True)
def progress_dir(settings, tmp_path):
    settings.LABELLOOP = {**settings.LABELLOOP, "IMPORT_PROGRESS_DIR": str(tmp_path / "progress"),
                          "EXPORT_DIR": str(tmp_path / "exports"), "EXPORT_ASYNC_ROWS": 1}
    return tmp_path / "progress"


def client_of(membership) -> Client:
    client = Client()
    client.force_login(membership.user)
    return client


def token_on(page: str) -> str:
    marker = "/import/?progress="
    start = page.index(marker) + len(marker)
    return page[start:start + 32]


def test_it_puts_a_hidden_progress_bar_on_the_import_page_that_starts_polling_on_submit(project, member):
    admin = client_of(member("admin"))
    page = admin.get(reverse("import", args=[project.slug])).content.decode()
    token = token_on(page)
    assert import_progress.valid_token(token)
    assert f'hx-get="/p/{project.slug}/import/progress/{token}/" hx-trigger="import-started"' in page and "js/import.js" in page
    assert 'id="import-progress"' in page and "style=" not in page
    assert token_on(admin.get(reverse("import", args=[project.slug])).content.decode()) != token  # one per view

    waiting = admin.get(reverse("import_progress", args=[project.slug, token]), **HTMX).content.decode()
    assert "Uploading…" in waiting and 'hx-trigger="every 1s"' in waiting and "<html" not in waiting


def test_it_records_an_imports_progress_through_upload_reading_and_done(project, member):
    admin = client_of(member("admin"))
    token = token_on(admin.get(reverse("import", args=[project.slug])).content.decode())
    upload = SimpleUploadedFile("papers.csv", ROWS.encode(), content_type="text/csv")
    response = admin.post(f"{reverse('import', args=[project.slug])}?progress={token}", {"file": upload})
    assert response.status_code == 302 and Item.objects.count() == 400

    progress = ImportProgress.load(token)
    assert (progress.phase, progress.done, progress.total, progress.percent) == ("done", len(ROWS), len(ROWS), 100)
    done = admin.get(reverse("import_progress", args=[project.slug, token]), **HTMX).content.decode()
    assert "Imported." in done and "hx-trigger" not in done  # polling stops


def test_it_shows_the_reading_phase_as_a_share_of_the_file(project, member, progress_dir):
    progress = ImportProgress(token=import_progress.new_token(), project_id=project.pk, user_id=0)
    reporter = import_progress.Reporter(progress)
    reader = import_progress.CountingReader(io.BytesIO(b"x" * 1000), 1000, reporter)
    reader.read(250)
    reporter.update("reading", force=True)
    assert ImportProgress.load(progress.token).percent == 25
    while reader.read(300):
        pass
    assert ImportProgress.load(progress.token).phase == "saving"


def test_it_shows_a_failed_import_with_its_error_and_a_retry_button(project, member):
    admin = client_of(member("admin"))
    token = token_on(admin.get(reverse("import", args=[project.slug])).content.decode())
    bad = SimpleUploadedFile("bad.csv", b"id,title,description,tag\ne1,Fine,text,\ne2,,,\n", content_type="text/csv")
    page = admin.post(f"{reverse('import', args=[project.slug])}?progress={token}", {"file": bad}, follow=True).content.decode()
    assert "The last import failed" in page and "Retry: choose the corrected file" in page
    assert 'for="id_file"' in page and Item.objects.count() == 0

    polled = admin.get(reverse("import_progress", args=[project.slug, token]), **HTMX).content.decode()
    assert "The import failed: row 3" in polled.replace("Row", "row") and "Retry: choose the file again" in polled
    assert "hx-trigger" not in polled


def test_it_keeps_an_imports_progress_to_the_person_who_started_it(project, member):
    admin, other_admin = client_of(member("admin")), client_of(member("admin"))
    token = token_on(admin.get(reverse("import", args=[project.slug])).content.decode())
    upload = SimpleUploadedFile("papers.csv", ROWS.encode(), content_type="text/csv")
    admin.post(f"{reverse('import', args=[project.slug])}?progress={token}", {"file": upload})
    theirs = other_admin.get(reverse("import_progress", args=[project.slug, token]), **HTMX).content.decode()
    assert "Imported." not in theirs and "Uploading…" in theirs
    assert client_of(member("annotator")).get(reverse("import_progress", args=[project.slug, token]), **HTMX).status_code == 403
    assert admin.get(f"/p/{project.slug}/import/progress/..%2F..%2Fetc/", **HTMX).status_code == 404
    assert ImportProgress.load("../../etc/passwd") is None
    assert admin.get(reverse("import_progress", args=[project.slug, token])).status_code == 302  # not htmx


def test_it_still_imports_without_a_progress_token_and_checks_csrf(project, member):
    membership = member("admin")
    admin = client_of(membership)
    upload = SimpleUploadedFile("papers.csv", ROWS.encode(), content_type="text/csv")
    assert admin.post(reverse("import", args=[project.slug]), {"file": upload}).status_code == 302
    assert Item.objects.count() == 400
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(membership.user)
    again = SimpleUploadedFile("more.csv", b"title,description\nx,y\n", content_type="text/csv")
    assert strict.post(reverse("import", args=[project.slug]), {"file": again}).status_code == 403
    assert Item.objects.count() == 400


def test_it_offers_a_retry_for_a_failed_export(project, member):
    admin = client_of(member("admin"))
    job = create_job(ExportSpec(project, "jsonl", "holdout", labels_only=True))
    project_id = job.project_id
    job.project_id = 0  # a project that no longer exists: the job fails
    job.save()
    failed = run_job(job.id)
    failed.project_id = project_id  # back in its project, so the page shows it
    failed.save()
    panel = admin.get(reverse("export_job", args=[project.slug, job.id]), **HTMX).content.decode()
    assert "The export failed" in panel and "Retry: export again" in panel and "hx-trigger" not in panel
    assert f'action="/p/{project.slug}/export/"' in panel
    for name, value in (("format", "jsonl"), ("split", "holdout"), ("labels_only", "on")):
        assert f'name="{name}" value="{value}"' in panel
