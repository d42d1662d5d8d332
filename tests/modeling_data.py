"""Small, learnable labeled data for the modeling tests: each default category has its own topic
words, mixed with shared filler words. Deterministic for a given seed."""
import csv
import io
import random

from labeling.importer import import_items

TOPICS = {
    "natural-language-processing": ["language", "text", "translation", "tokens", "sentiment", "parsing", "corpus", "words"],
    "computer-vision": ["image", "pixels", "detection", "segmentation", "camera", "video", "photos", "faces"],
    "mlops": ["deploy", "monitoring", "pipeline", "docker", "serving", "registry", "kubernetes", "latency"],
    "other": ["graph", "reinforcement", "tabular", "forecasting", "robot", "recommender", "bandits", "causal"],
}
FILLER = ["model", "learning", "data", "new", "method", "results", "simple", "fast", "study", "approach", "open", "source"]
CATEGORIES = list(TOPICS)


def text_about(category: str, rng: random.Random, topic_words: int = 3) -> tuple[str, str]:
    words = rng.sample(TOPICS[category], topic_words) + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words[:3]).capitalize(), " ".join(words[3:] + rng.sample(FILLER, 3))


def rows(count: int, seed: int = 0, labeled: bool = True, prefix: str = "item", mislabel: int = 0):
    """(id, title, description, tag) rows; the first `mislabel` labeled rows get a wrong tag."""
    rng = random.Random(seed)
    for n in range(count):
        category = CATEGORIES[n % len(CATEGORIES)]
        title, description = text_about(category, rng)
        tag = category
        if labeled and n < mislabel:
            tag = CATEGORIES[(n + 1) % len(CATEGORIES)]
        yield f"{prefix}-{seed}-{n}", f"{title} {n}", description, tag if labeled else ""


def csv_bytes(rows_) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "title", "description", "tag"])
    writer.writerows(rows_)
    return out.getvalue().encode()


def load(project, gold: int = 80, unlabeled: int = 20, seed: int = 0, mislabel: int = 0) -> None:
    """Import `gold` labeled items (gold labels) and `unlabeled` open items into `project`."""
    data = list(rows(gold, seed, labeled=True, prefix="gold", mislabel=mislabel))
    data += list(rows(unlabeled, seed + 1000, labeled=False, prefix="open"))
    import_items(project, io.BytesIO(csv_bytes(data)), "items.csv")
