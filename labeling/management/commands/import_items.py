import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling import actions
from labeling.importer import ImportRejected, import_items
from labeling.models import Project


class Command(BaseCommand):
    help = (
        "Import items from a CSV or JSONL file into a project. All or nothing: on any bad row nothing "
        "is written, the error names the row and column, and the command exits non-zero."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "file", help="CSV (title, description|text, optional id, tag|label|labels) or JSONL; '-' reads standard input"
        )
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--create", action="store_true", help="Create the project (four default categories) if missing")
        parser.add_argument(
            "--mode", choices=Project.Mode.values,
            help="With --create: single-label (default) or multi-label. Fixed once the project has items.",
        )
        parser.add_argument(
            "--allow-none-of-these", action="store_true",
            help="With --create --mode multi: an empty set of categories is a valid label.",
        )

    def handle(self, *args, file, project, create, mode, allow_none_of_these, **options):
        with self._open(file) as source:
            target, created = self._project(project, create, mode, allow_none_of_these)
            try:
                result = import_items(target, source, self._name(file), size=self._size(file))
            except ImportRejected as exc:
                if created:
                    # All or nothing includes the project this command made for the file.
                    target.delete()
                raise CommandError(f"Nothing was imported from {self._name(file)}: {exc}") from None
        self.stdout.write(
            f"Imported {result.created} items into '{target.slug}' ({result.duplicates} duplicates skipped, "
            f"{result.gold_labels} gold labels) in {result.seconds:.2f}s."
        )

    def _open(self, file: str):
        if file == "-":
            return sys.stdin.buffer
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {file}")
        try:
            return path.open("rb")
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None

    def _project(self, slug: str, create: bool, mode: str, allow_none: bool) -> tuple[Project, bool]:
        target = Project.objects.filter(slug=slug).first()
        if target is not None:
            if mode and target.mode != mode:
                raise CommandError(f"Project '{slug}' exists and is {target.get_mode_display()}; --mode {mode} cannot change it.")
            return target, False
        if not create:
            raise CommandError(f"No project '{slug}'. Pass --create to make it with the default categories.")
        try:
            return actions.create_project(slug, slug, mode=mode or Project.Mode.SINGLE, allow_none_of_these=allow_none), True
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    @staticmethod
    def _name(file: str) -> str:
        return "standard input" if file == "-" else Path(file).name

    @staticmethod
    def _size(file: str) -> int | None:
        return None if file == "-" else Path(file).stat().st_size
