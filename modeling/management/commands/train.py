"""`manage.py train --project SLUG [--wait] [--algorithms a,b] [--json]`: start a training run.

Without --wait the run is queued for a Celery worker, like the model page's button. With --wait it
runs in this process (for scripts and cron without a worker) and prints the outcome; the exit
status is 1 if the run failed.
"""
import json
import time

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from modeling import runs, training
from modeling.models import ModelVersion


class Command(BaseCommand):
    help = "Queue (or, with --wait, run here) a training run for a project."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--wait", action="store_true", help="run in this process and report the outcome")
        parser.add_argument(
            "--algorithms", help=f"with --wait: comma-separated subset of {', '.join(training.ALGORITHMS)}"
        )
        parser.add_argument("--json", action="store_true", help="print the run as one JSON object")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        algorithms = _algorithms(options["algorithms"])
        if algorithms and not options["wait"]:
            raise CommandError("--algorithms only applies with --wait (queued runs use TRAIN_ALGORITHMS).")
        in_flight = ModelVersion.objects.filter(project=project, status__in=runs.RUNNING).first()
        version = runs.request_training(project, ModelVersion.Trigger.COMMAND, enqueue=not options["wait"])
        if options["wait"] and runs.run(version.pk, algorithms=algorithms) == "taken":
            _wait_for(version)  # a worker had already taken this run: follow it
        if options["wait"]:
            version.refresh_from_db()
        # Without --wait, say what this command did: a worker may have started the run already.
        if options["json"]:
            self.stdout.write(json.dumps(_summary(version)))
        else:
            self.stdout.write(_sentence(version, already=in_flight is not None and not options["wait"]))
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"Run v{version.number} failed: {version.error}")


def _algorithms(option: str | None) -> list[str] | None:
    if not option:
        return None
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in names if name not in training.ALGORITHMS]
    if unknown:
        raise CommandError(f"Unknown or unavailable algorithm(s): {', '.join(unknown)}; choose from {', '.join(training.ALGORITHMS)}.")
    return names


def _wait_for(version: ModelVersion, poll_seconds: float = 1.0) -> None:
    while True:
        version.refresh_from_db(fields=["status"])
        if not version.is_running():
            return
        time.sleep(poll_seconds)


def _summary(version: ModelVersion) -> dict:
    return {
        "project": version.project.slug,
        "version": version.number,
        "status": version.status,
        "algorithm": version.algorithm,
        "trained_on": version.trained_on,
        "holdout_size": version.holdout_size,
        "weighted_f1": version.metrics.get("weighted_f1"),
        "macro_f1": version.metrics.get("macro_f1"),
        "active": version.active,
        "promoted": version.promoted,
        "reason": version.promotion_reason,
        "error": version.error,
        "timings": version.timings,
    }


def _sentence(version: ModelVersion, already: bool = False) -> str:
    label = f"{version.project.slug} v{version.number}"
    if already:
        return f"{label} is already in progress ({version.status}, {version.progress}%); one run per project at a time."
    if version.status == ModelVersion.Status.QUEUED:
        return f"Queued {label}; a worker will pick it up (follow it on /p/{version.project.slug}/model/)."
    if version.status == ModelVersion.Status.FAILED:
        return f"{label} failed."
    if not version.algorithm:
        return f"{label}: {version.promotion_reason}"
    return (
        f"{label}: {version.algorithm} trained on {version.trained_on} items, holdout weighted F1 "
        f"{version.metrics.get('weighted_f1', 0):.3f}. {version.promotion_reason}"
        + (f"\nNote: {version.error}" if version.error else "")
    )
