import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling import actions
from labeling.importer import ImportRejected, import_items
from labeling.models import Project


class Command(BaseCommand):
    help = "Import items from a CSV or JSONL file into a project. All or nothing."

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV (title, description|text, optional id, tag|label|labels) or JSONL")
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--create", action="store_true", help="Create the project (four default categories) if missing")

    def handle(self, *args, file, project, create, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            if not create:
                raise CommandError(f"No project '{project}'. Pass --create to make it with the default categories.")
            target = actions.create_project(project, project)
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {file}")
        with path.open("rb") as stream:
            try:
                result = import_items(target, stream, path.name, size=os.path.getsize(path))
            except ImportRejected as exc:
                raise CommandError(f"Nothing was imported from {path.name}: {exc}") from None
        self.stdout.write(
            f"Imported {result.created} items into '{target.slug}' ({result.duplicates} duplicates skipped, "
            f"{result.gold_labels} gold labels) in {result.seconds:.2f}s."
        )
