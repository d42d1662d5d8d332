"""`manage.py evaluate_csv --train A.csv --test B.csv [--json]`: the offline experiment.

Every available algorithm is tuned by cross-validation on the training CSV, through the same
`select_and_fit` the app trains with, then scored once on the test CSV. "best" is the algorithm
cross-validation on the training CSV prefers, never the one with the best test score: choosing by
test score would turn the test score into an optimistic estimate.
"""

import csv
import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from modeling import embeddings, evaluation, training

TEXT_COLUMNS = ("title", "description", "text")
LABEL_COLUMNS = ("tag", "label")


class DatasetError(ValueError):
    pass


def read_labelled_csv(path: str | Path) -> tuple[list[str], list[str]]:
    """(texts, labels) from a CSV with `title`, `description` or `text`, and `tag` or `label`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            return _read_rows(path, csv.DictReader(stream))
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{path} is not UTF-8 text ({error}); save it as UTF-8 and try again."
        ) from error
    except csv.Error as error:
        raise DatasetError(f"{path} is not a readable CSV file: {error}.") from error


def _read_rows(path: Path, reader: csv.DictReader) -> tuple[list[str], list[str]]:
    columns = reader.fieldnames or []
    label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
    if label_column is None:
        raise DatasetError(
            f"{path} has no label column: expected 'tag' or 'label' (found: {', '.join(columns)})."
        )
    if not any(c in columns for c in TEXT_COLUMNS):
        raise DatasetError(
            f"{path} has no text column: expected 'title' and 'description' or 'text' "
            f"(found: {', '.join(columns)})."
        )
    texts, labels = [], []
    for row in reader:
        label = (row.get(label_column) or "").strip()
        if not label:
            raise DatasetError(
                f"{path}, line {reader.line_num}: the {label_column!r} column is empty."
            )
        texts.append(
            training.item_text(row.get("title"), row.get("description") or row.get("text"))
        )
        labels.append(label)
    if not texts:
        raise DatasetError(f"{path} has a header but no rows.")
    return texts, labels


def run_experiment(train_path, test_path, *, algorithms=None, cv: int = 5, seed: int = 0) -> dict:
    """Tune and fit each algorithm on the training CSV, score it on the test CSV."""
    train_texts, train_labels = read_labelled_csv(train_path)
    test_texts, test_labels = read_labelled_csv(test_path)
    names = list(algorithms or training.ALGORITHMS)
    encoder_load_seconds = _load_encoder_if_needed(names)
    results, reports = {}, {}
    for name in names:
        # Each algorithm encodes its own texts, so its train_seconds is what training costs.
        model, reports[name] = training.select_and_fit(
            train_texts, train_labels, algorithms=[name], cv=cv, seed=seed
        )
        results[name] = _test_scores(model, reports[name], test_texts, test_labels)
    best = training.pick_best([_best_candidate(name, report) for name, report in reports.items()])
    return {
        "n_train": len(train_texts),
        "n_test": len(test_texts),
        "encoder_load_seconds": encoder_load_seconds,
        "algorithms": results,
        "best": best.algorithm,
        "selection": {
            "algorithm": best.algorithm,
            "cv_weighted_f1": best.cv_weighted_f1,
            "cv_folds": reports[best.algorithm]["cv_folds"],
            "seed": seed,
            "candidates": [c for report in reports.values() for c in report["candidates"]],
        },
    }


def _load_encoder_if_needed(names) -> float | None:
    """Load the sentence encoder up front: a once-per-process cost, not part of any training."""
    if not any(training.ALGORITHMS[name].uses_embeddings for name in names):
        return None
    started = time.perf_counter()
    embeddings.encoder()
    return round(time.perf_counter() - started, 3)


def _test_scores(model, report: dict, texts: list[str], labels: list[str]) -> dict:
    proba = model.predict_proba(texts)
    predicted = [model.classes_[i] for i in proba.argmax(axis=1)]
    metrics = evaluation.evaluate(labels, predicted, proba, model.classes_, texts=texts)
    return {
        "weighted_f1": metrics["weighted_f1"],
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "intervals": metrics["intervals"],  # 95 % bootstrap intervals over the test rows
        "ece": metrics["calibration"]["ece"],
        "per_class": metrics["per_class"],
        "slices": metrics["slices"],
        "cv_weighted_f1": report["cv_weighted_f1"],
        "params": report["params"],
        "temperature": report["temperature"],
        "train_seconds": report["train_seconds"],
        "train_cpu_seconds": report["cpu_seconds"],
    }


def _best_candidate(name: str, report: dict) -> training.Candidate:
    return training.Candidate(name, report["params"], cv_weighted_f1=report["cv_weighted_f1"])


class Command(BaseCommand):
    help = (
        "Train every algorithm on one labelled CSV (each tuned by cross-validation) "
        "and report its metrics on another."
    )

    def add_arguments(self, parser):
        parser.add_argument("--train", required=True, help="CSV to train and cross-validate on")
        parser.add_argument("--test", required=True, help="CSV to score the trained models on")
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object instead of a table"
        )
        parser.add_argument(
            "--algorithms",
            help=f"comma-separated subset of: {', '.join(training.ALGORITHMS)} (default: all)",
        )
        parser.add_argument("--cv", type=int, default=5, help="cross-validation folds (default 5)")
        parser.add_argument(
            "--seed", type=int, default=0, help="seed for the fold split (default 0)"
        )

    def handle(self, *args, **options):
        algorithms = _algorithm_names(options["algorithms"])
        try:
            result = run_experiment(
                options["train"],
                options["test"],
                algorithms=algorithms,
                cv=options["cv"],
                seed=options["seed"],
            )
        except (DatasetError, training.InvalidRule) as error:
            raise CommandError(str(error)) from error
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(_table(result))


def _algorithm_names(option: str | None) -> list[str] | None:
    if not option:
        return None
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in names if name not in training.ALGORITHMS]
    if unknown:
        hint = (
            "" if embeddings.available() else " (embedding algorithms need the [embeddings] extra)"
        )
        raise CommandError(
            f"Unknown or unavailable algorithm(s): {', '.join(unknown)}. "
            f"Available: {', '.join(training.ALGORITHMS)}{hint}."
        )
    return names


def _table(result: dict) -> str:
    header = (
        f"{'algorithm':<26}{'CV wF1':>8}{'test wF1':>10}{'95 % interval':>15}{'macro F1':>10}"
        f"{'accuracy':>10}{'ECE':>7}{'train s':>9}"
    )
    lines = [f"{result['n_train']} training rows, {result['n_test']} test rows", "", header]
    for name, scores in result["algorithms"].items():
        low, high = scores["intervals"]["weighted_f1"]
        lines.append(
            f"{name:<26}{scores['cv_weighted_f1']:>8.3f}{scores['weighted_f1']:>10.3f}{f'{low:.3f}-{high:.3f}':>15}"
            f"{scores['macro_f1']:>10.3f}{scores['accuracy']:>10.3f}{scores['ece']:>7.3f}{scores['train_seconds']:>9.1f}"
        )
    lines += ["", f"Best by cross-validation on the training CSV: {result['best']}"]
    return "\n".join(lines)
