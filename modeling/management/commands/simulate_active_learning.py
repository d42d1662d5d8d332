"""`manage.py simulate_active_learning --csv FILE --strategy uncertainty|random [--json] [--plot out.svg]`

Replays labeling on a CSV whose labels are all known, with a perfect annotator: start from a small
random set, then label `--batch` items at a time, chosen by the strategy (`uncertainty`: those the
current model is least sure of; `random`), retraining TF-IDF + logistic regression after each
batch. Each seed splits the CSV once into a pool (labeled step by step) and a test part (never
labeled) on which every point of the learning curve is scored; all strategies share a seed's
split. Reports the mean curve (weighted F1 against labels) and the labels each strategy needed to
reach 95% of the F1 of a model trained on the whole pool.
"""
import json
from html import escape
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from modeling import active_learning

from .evaluate_csv import DatasetError, read_labelled_csv


class Command(BaseCommand):
    help = "Simulate active learning on a labelled CSV: learning curves by strategy, several seeds."

    def add_arguments(self, parser):
        parser.add_argument("--csv", required=True, help="labelled CSV (title, description|text, tag|label)")
        parser.add_argument(
            "--strategy", default="uncertainty,random",
            help="uncertainty, random, or both comma-separated (default: both)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--seeds", type=int, default=3, help="how many seeds (splits and starting sets); default 3")
        parser.add_argument("--batch", type=int, default=20, help="labels added per step (default 20)")
        parser.add_argument("--initial", type=int, default=20, help="random labels to start from (default 20)")
        parser.add_argument("--measure", choices=active_learning.MEASURES, default="margin", help="uncertainty measure")
        parser.add_argument("--test-fraction", type=float, default=0.2, help="share of the CSV held out for scoring")
        parser.add_argument("--max-labels", type=int, help="stop the curve at this many labels")
        parser.add_argument("--plot", help="write the learning curves to this SVG file")

    def handle(self, *args, **options):
        strategies = [s.strip() for s in options["strategy"].split(",") if s.strip()]
        unknown = [s for s in strategies if s not in active_learning.STRATEGIES]
        if not strategies or unknown:
            raise CommandError(f"Unknown strategy {', '.join(unknown) or '(none)'}; use uncertainty, random or both.")
        if options["seeds"] < 1 or options["batch"] < 1 or options["initial"] < 2:
            raise CommandError("--seeds and --batch must be at least 1, --initial at least 2.")
        if not 0.05 <= options["test_fraction"] <= 0.5:
            raise CommandError("--test-fraction must be between 0.05 and 0.5.")
        try:
            texts, labels = read_labelled_csv(options["csv"])
        except DatasetError as error:
            raise CommandError(str(error)) from error
        if len(texts) < 20 or len(set(labels)) < 2:
            raise CommandError(f"{options['csv']}: need at least 20 rows and two labels to simulate anything.")
        settings = active_learning.Simulation(
            batch=options["batch"], initial=options["initial"], test_fraction=options["test_fraction"],
            measure=options["measure"], max_labels=options["max_labels"],
        )
        seeds = list(range(options["seeds"]))
        result = {
            "csv": str(options["csv"]),
            "items": len(texts),
            "categories": len(set(labels)),
            "model": "TF-IDF (words 1-2 + characters 2-5, fitted on the pool's texts) + logistic regression (C=10, balanced)",
            "seeds": seeds,
            "batch": settings.batch,
            "initial": settings.initial,
            "test_fraction": settings.test_fraction,
            "measure": settings.measure,
            "target": "95% of the full-pool weighted F1",
            "strategies": active_learning.compare(texts, labels, strategies, seeds, settings),
        }
        result["labels_to_target"] = {name: s["labels_to_target"] for name, s in result["strategies"].items()}
        if options["plot"]:
            Path(options["plot"]).write_text(svg_plot(result), encoding="utf-8")
            result["plot"] = options["plot"]
        self.stdout.write(json.dumps(result) if options["json"] else _table(result))


def _table(result: dict) -> str:
    lines = [f"{result['items']} items, {result['categories']} categories, seeds {result['seeds']}, batches of {result['batch']}"]
    for name, summary in result["strategies"].items():
        lines.append(
            f"{name:<12} full-pool F1 {summary['full_data_f1']:.3f}; 95% of it ({summary['target_f1']:.3f}) reached at "
            f"{summary['labels_to_target']} labels (per seed: {summary['labels_to_target_per_seed']})"
        )
    return "\n".join(lines)


COLOURS = {"uncertainty": "#2350c8", "random": "#c0392b"}


def svg_plot(result: dict, width: int = 720, height: int = 420) -> str:
    """The mean learning curves as a standalone SVG (no dependencies, no scripts)."""
    left, right, top, bottom = 60, 20, 30, 50
    curves = {name: s["curve"] for name, s in result["strategies"].items()}
    max_x = max(p["labels"] for curve in curves.values() for p in curve)
    low_y = min(p["weighted_f1"] for curve in curves.values() for p in curve)
    low_y = max(0.0, min(low_y, 0.9) - 0.05)

    def x(n):
        return left + (width - left - right) * n / max_x

    def y(f1):
        return top + (height - top - bottom) * (1 - (f1 - low_y) / (1 - low_y))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">Active learning: weighted F1 on held-out items vs labels ({len(result["seeds"])} seeds)</text>',
        f'<line x1="{left}" y1="{y(low_y)}" x2="{width - right}" y2="{y(low_y)}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(low_y)}" stroke="#333"/>',
    ]
    for i in range(6):
        value = low_y + (1 - low_y) * i / 5
        parts.append(f'<text x="{left - 8}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.2f}</text>')
        n = round(max_x * i / 5)
        parts.append(f'<text x="{x(n):.1f}" y="{height - bottom + 18}" text-anchor="middle">{n}</text>')
    parts.append(f'<text x="{(width + left) / 2}" y="{height - 12}" text-anchor="middle">labels</text>')
    for row, (name, summary) in enumerate(result["strategies"].items()):
        colour = COLOURS.get(name, "#555")
        points = " ".join(f"{x(p['labels']):.1f},{y(p['weighted_f1']):.1f}" for p in summary["curve"])
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        target = summary["target_f1"]
        parts.append(
            f'<line x1="{left}" y1="{y(target):.1f}" x2="{width - right}" y2="{y(target):.1f}" stroke="{colour}" stroke-dasharray="4 4" stroke-width="1"/>'
        )
        reached = summary["labels_to_target"]
        label = f"{name}: 95% of full F1 at {reached} labels" if reached else f"{name}: never reached 95% of full F1"
        parts.append(f'<text x="{width - right - 8}" y="{y(low_y) - 12 - 16 * row}" text-anchor="end" fill="{colour}">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
