import csv
import io
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from labeling import actions
from labeling.demo import demo_items
from labeling.importer import import_items
from labeling.models import Project, Role

DEMO_USERS = [("admin", Role.ADMIN), ("reviewer", Role.REVIEWER), ("annotator", Role.ANNOTATOR)]
# One item in GOLD_SHARE arrives already labeled (gold, provenance "import"), the rest wait for
# people. Demo items cycle through the categories, so gold is taken a whole cycle at a time: every
# category gets its share and the demo model has every class to learn from.
GOLD_SHARE = 4


class Command(BaseCommand):
    help = "Create (or refresh) the demo project and demo users. Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--password", help="Password for all three demo users (default: random, printed).")
        parser.add_argument("--items", type=int, default=300)

    def handle(self, *args, password=None, items=300, **options):
        project = Project.objects.filter(slug="demo").first() or actions.create_project(
            "Demo: ML projects", "demo", guidelines=GUIDELINES
        )
        passwords = {}
        with transaction.atomic():
            for username, role in DEMO_USERS:
                passwords[username] = self._ensure_user(username, password, superuser=(role == Role.ADMIN))
                actions.add_member(project, get_user_model().objects.get(username=username), role)
        result = import_items(project, io.BytesIO(self._demo_csv(items)), "demo.csv")
        self.stdout.write(
            f"Demo project '{project.slug}': {result.created} new items, {result.duplicates} already there."
        )
        for username, pw in passwords.items():
            line = f"  {username:<10} password: {pw}" if pw else f"  {username:<10} (password unchanged)"
            self.stdout.write(line)

    def _ensure_user(self, username, password, superuser):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
        if not created and password is None:
            return None
        chosen = password or secrets.token_urlsafe(9)
        user.set_password(chosen)
        user.is_staff = user.is_superuser = superuser
        user.save()
        return chosen

    def _demo_csv(self, count) -> bytes:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["id", "title", "description", "tag"])
        writer.writeheader()
        rows = demo_items(count)
        cycle = len({row["tag"] for row in rows}) or 1
        for i, row in enumerate(rows):
            if (i // cycle) % GOLD_SHARE != 0:
                row["tag"] = ""
            writer.writerow(row)
        return out.getvalue().encode()


GUIDELINES = """\
Label each ML project by its main application area.

- **natural-language-processing**: text, speech transcripts, language models, translation.
- **computer-vision**: images or video: detection, segmentation, recognition, generation.
- **mlops**: deploying, serving, monitoring, versioning or orchestrating ML systems.
- **other**: anything else (tabular, time series, RL, recommenders, graphs).

When a project spans two areas, choose the one its title emphasises. Skip (`s`) when unsure.
"""
