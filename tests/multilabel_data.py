"""Small, learnable multi-label data: each item is about one or two of the default categories and
carries topic words of each (modeling_data.TOPICS). Deterministic for a given seed."""
import csv
import io
import random

from labeling import actions
from labeling.importer import import_items

from .modeling_data import CATEGORIES, FILLER, TOPICS


def label_set(n: int) -> list[str]:
    """Every third item has a second category: the next one in CATEGORIES."""
    first = CATEGORIES[n % len(CATEGORIES)]
    return [first, CATEGORIES[(n + 1) % len(CATEGORIES)]] if n % 3 == 0 else [first]


def text_about(categories: list[str], rng: random.Random) -> tuple[str, str]:
    words = [word for category in categories for word in rng.sample(TOPICS[category], 3)] + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words[:3]).capitalize(), " ".join(words[3:] + rng.sample(FILLER, 3))


def rows(count: int, seed: int = 0, labeled: bool = True, prefix: str = "item"):
    """(id, title, description, labels) rows, labels `;`-separated (empty when not labeled)."""
    rng = random.Random(seed)
    for n in range(count):
        categories = label_set(n)
        title, description = text_about(categories, rng)
        yield f"{prefix}-{seed}-{n}", f"{title} {n}", description, ";".join(categories) if labeled else ""


def texts_and_sets(count: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    data = list(rows(count, seed))
    return [f"{title} {text}" for _, title, text, _ in data], [labels.split(";") for *_, labels in data]


def csv_bytes(rows_) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "title", "description", "labels"])
    writer.writerows(rows_)
    return out.getvalue().encode()


def multi_label_project(slug: str = "multi", **settings_):
    return actions.create_project("Multi-label project", slug, mode="multi", **settings_)


def load(project, gold: int = 120, unlabeled: int = 15, seed: int = 0) -> None:
    data = list(rows(gold, seed, labeled=True, prefix="gold"))
    data += list(rows(unlabeled, seed + 1000, labeled=False, prefix="open"))
    import_items(project, io.BytesIO(csv_bytes(data)), "items.csv")
