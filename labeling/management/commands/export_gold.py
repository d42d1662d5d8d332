import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling.export import FORMATS, SPLITS, ExportError, ExportSpec, export_to_path, text_chunks
from labeling.models import Project


class Command(BaseCommand):
    help = (
        "Export a project's gold dataset (one row per gold item) as CSV, JSON Lines or Parquet, "
        "with provenance, or with --labels-only as id,title,description,tag. Streams in constant memory."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--format", default="csv", help=f"One of {', '.join(FORMATS)} (default csv)")
        parser.add_argument("--split", default="all", help=f"One of {', '.join(SPLITS)} (default all)")
        parser.add_argument("--out", help="File to write (default: standard output; Parquet needs a file)")
        parser.add_argument(
            "--labels-only", action="store_true",
            help="Only id,title,description,tag: what training scripts expect and import_items reads",
        )

    def handle(self, *args, project, format, split, out, labels_only, **options):
        target = Project.objects.filter(slug=project).first()
        if target is None:
            slugs = Project.objects.order_by("slug").values_list("slug", flat=True)[:20]
            known = ", ".join(slugs) or "none yet"
            raise CommandError(f"No project '{project}'. Known projects: {known}.")
        try:
            spec = ExportSpec(target, format, split, labels_only)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        started = time.perf_counter()
        if out:
            rows = self._to_file(spec, Path(out))
        elif spec.format == "parquet":
            raise CommandError("Parquet is binary: name a file with --out FILE.parquet.")
        else:
            rows = self._to_stdout(spec)
        seconds = time.perf_counter() - started
        where = out or "standard output"
        # To stderr when the data goes to stdout, so a pipe receives the data alone.
        report = self.stderr if not out else self.stdout
        report.write(
            f"Exported {rows:,} gold rows of '{target.slug}' ({spec.split}, {spec.format}"
            f"{', labels only' if labels_only else ''}) to {where} in {seconds:.2f}s.",
            style_func=None,
        )

    def _to_stdout(self, spec: ExportSpec) -> int:
        rows = 0
        for text, n in text_chunks(spec):
            self.stdout.write(text, ending="")
            rows += n
        return rows

    def _to_file(self, spec: ExportSpec, path: Path) -> int:
        if not path.parent.is_dir():
            raise CommandError(f"No such folder: {path.parent}")
        try:
            return export_to_path(spec, path)
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror or exc}.") from None
