"""Synthetic items for the benchmarks: 30-word texts from a made-up vocabulary, deterministic.

Written as a CSV the importer reads like any user's file (`id,title,description,tag`). A small
share of rows carries a label, as real imports often do: those become gold items (and, once split,
honeypots), so the claim path measured is the one a real project takes.
"""
import csv
import os
import random
from pathlib import Path

TEXT_WORDS = 30
TITLE_WORDS = 5
# One row in this many carries a label (0.5 %): gold items, honeypot candidates.
GOLD_EVERY = 200
CATEGORIES = ["natural-language-processing", "computer-vision", "mlops", "other"]


def vocabulary(size: int = 4096, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def rows(count: int, seed: int = 11):
    """(id, title, description, tag) tuples; the id in the title keeps every row unique."""
    rng = random.Random(seed)
    words = vocabulary()
    for n in range(1, count + 1):
        title = " ".join(rng.choices(words, k=TITLE_WORDS)) + f" {n}"
        text = " ".join(rng.choices(words, k=TEXT_WORDS))
        tag = CATEGORIES[n % len(CATEGORIES)] if n % GOLD_EVERY == 0 else ""
        yield f"bench-{n}", title, text, tag


def items_csv(count: int, folder: Path) -> Path:
    """The CSV of `count` items, written once and reused by later runs and other backends."""
    path = folder / f"items-{count}.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".csv.{os.getpid()}.part")
    with partial.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "title", "description", "tag"])
        writer.writerows(rows(count))
    partial.replace(path)  # a crash mid-write never leaves a short file behind under the real name
    return path


def sizes_for(items: int) -> list[int]:
    """Project sizes measured: a 10k project beside the requested size, to show the claim's cost
    does not grow with the project."""
    return sorted({min(10_000, items), items})
