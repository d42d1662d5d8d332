"""Bench: classifier quality on the shared dataset, every variant side by side, one JSON object per
line on stdout.

    nice -n 15 .venv/bin/python bench/quality.py
    BENCH_ONLY=select_tfidf_logreg,soft_vote BENCH_SEEDS=0,1,2 nice -n 15 .venv/bin/python bench/quality.py

Protocol: outer stratified 5-fold cross-validation (`training.cv_folds`, seeds BENCH_SEEDS, default
0) on /work/shared/data/mwml/dataset.csv. Every setting is chosen inside the outer training fold:
the `select_*` variants run the product's own `training.select` (inner 5-fold CV over the
algorithm's grid) and `fit_selected` on the outer training part, so their score is the nested
estimate of what the product delivers; the score `select` itself reports (the best inner
candidate, optimistic) is printed beside it as `inner_cv_weighted_f1`. Fine-tuned variants use
settings fixed before looking at any score (see FINE_TUNING). `train_seconds` is the wall time of
everything a training run would do on the outer training part (selection, final fit, encoding
its texts), per fold; `cpu_seconds` is this process's CPU time for the same (all threads), the
figure to trust when the machine is busy (load average printed).

Variants:
  select_<algorithm>  the product's selection restricted to one algorithm; select_all: all of them
  soft_vote           probabilities of the selected tfidf_logreg and embeddings_logreg averaged, the
                      weight chosen on their inner out-of-fold probabilities (nested)
  soft_vote3          the same over tfidf_logreg, embeddings_logreg and embeddings_tfidf_logreg
  stacking            logistic regression on the base models' inner out-of-fold log-probabilities
  ft_full             MiniLM (float32) fine-tuned end to end with a linear head (LP-FT), 2 epochs
  ft_full_e3          the same, 3 epochs at twice the learning rate (over the one-minute budget)
  ft_top2             the same, only the top two transformer layers trained, 4 epochs
  setfit              SetFit-style: batch-all triplet loss on the encoder, then logistic regression
  <ft variant>+tfidf  its probabilities averaged 50/50 with the selected tfidf_logreg's
Base variants that others need are computed even when not named in BENCH_ONLY (not printed).
BENCH_TRAIN_THREADS (default 2) sets torch threads for fine-tuning (1 is faster when other work
holds a core); BENCH_MAX_FOLDS=k scores only the first k outer folds (quick checks). Everything
for one seed takes about 15 minutes of CPU, most of it the fine-tuned variants.
Out-of-fold probabilities are saved to var/bench/quality/<variant>-seed<k>.npy for error analysis.
"""
import csv
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from modeling import embeddings, training

DATASET = Path(os.environ.get("BENCH_DATASET", "/work/shared/data/mwml/dataset.csv"))
SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "0").split(",")]
ONLY = list(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
OUT = ROOT / "var" / "bench" / "quality"
FOLDS = 5
# Score only the first k outer folds (quick checks; the summary says how many were scored).
MAX_FOLDS = int(os.environ.get("BENCH_MAX_FOLDS", str(FOLDS)))
# Threads for fine-tuning (the product's encoder uses embeddings.TORCH_THREADS for inference).
TRAIN_THREADS = int(os.environ.get("BENCH_TRAIN_THREADS", "2"))

# Fixed a priori, not tuned on this data: common small-data settings (LP-FT: Kumar et al., 2022).
FINE_TUNING = {
    "ft_full": {"epochs": 2, "lr": 5e-5, "train_layers": None},
    "ft_full_e3": {"epochs": 3, "lr": 1e-4, "train_layers": None},
    "ft_top2": {"epochs": 4, "lr": 1e-4, "train_layers": 2},
    "setfit": {"epochs": 2, "lr": 5e-5, "train_layers": None, "objective": "triplet"},
}
BASES = ["select_tfidf_logreg", "select_embeddings_logreg", "select_embeddings_tfidf_logreg"]


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def dataset() -> tuple[list[str], list[str]]:
    with DATASET.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [training.item_text(r["title"], r["description"]) for r in rows], [r["tag"] for r in rows]


@dataclass
class FoldResult:
    proba: np.ndarray  # held-out texts x classes (sorted labels)
    train_seconds: float
    cpu_seconds: float
    inner_oof: np.ndarray | None = None  # the chosen model's inner out-of-fold probabilities
    extra: dict = field(default_factory=dict)


# --- variants ---------------------------------------------------------------------------------


def product_selection(algorithms):
    """The product's training run on one outer training part: `select` + `fit_selected`."""

    def run(texts, labels, seed):
        selection = training.select(texts, labels, algorithms=algorithms, seed=seed)
        model, report = training.fit_selected(selection, texts, labels)
        oof = training.with_temperature(selection.best.out_of_fold, report["temperature"])
        extra = {"algorithm": report["algorithm"], "params": report["params"],
                 "inner_cv_weighted_f1": report["cv_weighted_f1"]}
        return model, oof, extra

    return run


def fine_tuned(settings):
    def run(texts, labels, seed):
        model = FineTunedEncoder(seed=seed, **settings).fit(texts, labels)
        return model, None, {"settings": settings}

    return run


def score_variant(run, texts, labels, folds, seed) -> list[FoldResult]:
    texts_a, labels_a = np.array(texts, dtype=object), np.array(labels, dtype=object)
    classes = sorted(set(labels))
    results = []
    for train, test in folds:
        started, cpu = time.perf_counter(), time.process_time()
        model, oof, extra = run(list(texts_a[train]), list(labels_a[train]), seed)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        assert list(model.classes_) == classes
        proba = model.predict_proba(list(texts_a[test]))
        results.append(FoldResult(proba, seconds, cpu_seconds, oof, extra))
    return results


def soft_vote(bases: list[list[FoldResult]], labels, folds) -> list[FoldResult]:
    """Weighted mean of the bases' probabilities, weights (a grid on the simplex, steps of 0.1)
    chosen by weighted F1 on the bases' inner out-of-fold probabilities of each outer fold."""
    labels = np.array(labels, dtype=object)
    classes = sorted(set(labels))
    grid = _simplex(len(bases), 10)
    results = []
    for k, (train, _) in enumerate(folds):
        inner = [b[k].inner_oof for b in bases]
        scores = [_mixed_f1(w, inner, labels[train], classes) for w in grid]
        best = grid[int(np.argmax(scores))]  # ties: the first in grid order
        proba = sum(wi * b[k].proba for wi, b in zip(best, bases))
        results.append(FoldResult(proba, sum(b[k].train_seconds for b in bases),
                                  sum(b[k].cpu_seconds for b in bases), extra={"weights": list(best)}))
    return results


def _mixed_f1(weights, probas, truth, classes) -> float:
    mixed = sum(w * p for w, p in zip(weights, probas))
    return f1_score(truth, [classes[i] for i in mixed.argmax(1)], average="weighted")


def _simplex(n: int, steps: int) -> list[tuple[float, ...]]:
    """Every weight vector of n non-negative multiples of 1/steps summing to one, the first
    base's weight highest first."""
    if n == 1:
        return [(1.0,)]
    return [(i / steps, *(w * (steps - i) / steps for w in rest)) if i < steps else (1.0,) + (0.0,) * (n - 1)
            for i in range(steps, -1, -1) for rest in (_simplex(n - 1, steps - i) if i < steps else [None])]


def stacking(bases: list[list[FoldResult]], labels, folds) -> list[FoldResult]:
    """Multinomial logistic regression on the bases' log-probabilities, fitted on their inner
    out-of-fold ones (so the meta-model never sees a base model's training texts' own scores)."""
    labels = np.array(labels, dtype=object)
    results = []
    for k, (train, _) in enumerate(folds):
        started = time.perf_counter()
        inner = np.hstack([np.log(np.clip(b[k].inner_oof, 1e-6, 1)) for b in bases])
        meta = LogisticRegression(C=1.0, max_iter=2000).fit(inner, labels[train])
        outer = np.hstack([np.log(np.clip(b[k].proba, 1e-6, 1)) for b in bases])
        extra = time.perf_counter() - started
        results.append(FoldResult(meta.predict_proba(outer), sum(b[k].train_seconds for b in bases) + extra,
                                  sum(b[k].cpu_seconds for b in bases) + extra))
    return results


def averaged(a: list[FoldResult], b: list[FoldResult], weight=0.5) -> list[FoldResult]:
    return [FoldResult(weight * x.proba + (1 - weight) * y.proba, x.train_seconds + y.train_seconds,
                       x.cpu_seconds + y.cpu_seconds) for x, y in zip(a, b)]


# --- fine-tuning ------------------------------------------------------------------------------


class FineTunedEncoder(training._Classifier):
    """MiniLM fine-tuned with a linear head on its (unit-length) sentence embedding.

    LP-FT: the head starts as a logistic regression on the frozen embeddings, then encoder and
    head train together with AdamW (linear warm-up over 10% of steps, then linear decay), batch
    16, dropout as in the model. `train_layers=k` trains only the top k transformer layers (the
    rest and the word embeddings frozen: no backward pass through them). `objective="triplet"`
    trains the encoder alone with sentence-transformers' BatchAllTripletLoss (SetFit-style; labels
    define positives within a batch) and fits the logistic regression head afterwards.
    """

    def __init__(self, epochs=2, lr=5e-5, train_layers=None, objective="cross_entropy", batch_size=16,
                 seed=0):
        self.epochs = epochs
        self.lr = lr
        self.train_layers = train_layers
        self.objective = objective
        self.batch_size = batch_size
        self.seed = seed

    def fit(self, texts, labels):
        import torch

        torch.set_num_threads(TRAIN_THREADS)
        torch.manual_seed(self.seed)
        rng = random.Random(self.seed)
        self.classes_ = sorted(set(labels))
        y = torch.tensor([self.classes_.index(label) for label in labels])
        self.encoder_ = _float32_encoder()
        self._freeze_lower_layers()
        if self.objective == "triplet":
            from sentence_transformers.losses import (
                BatchAllTripletLoss,
                BatchHardTripletLossDistanceFunction,
            )

            # SetFit's defaults for its triplet losses: cosine distance, margin 0.25.
            loss_fn = BatchAllTripletLoss(
                self.encoder_, distance_metric=BatchHardTripletLossDistanceFunction.cosine_distance, margin=0.25)
            params = [p for p in self.encoder_.parameters() if p.requires_grad]
            self._train(texts, y, params, lambda f, yb: loss_fn([f], yb), rng)
            self.head_ = _head_from_logreg(self._encode(texts), labels)
        else:
            self.head_ = _head_from_logreg(self._encode(texts), labels)
            params = [p for p in self.encoder_.parameters() if p.requires_grad] + list(self.head_.parameters())
            ce = torch.nn.CrossEntropyLoss()
            self._train(texts, y, params, lambda f, yb: ce(self.head_(self.encoder_(f)["sentence_embedding"]), yb), rng)
        self.encoder_.eval()
        return self

    def _freeze_lower_layers(self):
        if self.train_layers is None:
            return
        bert = self.encoder_[0].auto_model
        for p in bert.parameters():
            p.requires_grad = False
        for layer in bert.encoder.layer[-self.train_layers:]:
            for p in layer.parameters():
                p.requires_grad = True

    def _train(self, texts, y, params, loss_of, rng):
        import torch

        steps_per_epoch = -(-len(texts) // self.batch_size)
        total = steps_per_epoch * self.epochs
        warmup = max(1, total // 10)
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
        self.encoder_.train()
        order = list(range(len(texts)))
        for _ in range(self.epochs):
            rng.shuffle(order)
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                features = self.encoder_.preprocess([texts[i] for i in index])
                loss = loss_of(features, y[index])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()

    def _encode(self, texts) -> np.ndarray:
        import torch

        self.encoder_.eval()
        with torch.inference_mode():
            return self.encoder_.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                        show_progress_bar=False, convert_to_numpy=True)

    def _proba(self, texts):
        import torch

        vectors = torch.from_numpy(self._encode(texts))
        with torch.inference_mode():
            return torch.softmax(self.head_(vectors), dim=1).numpy()


def _float32_encoder():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embeddings.model_path()), device="cpu", local_files_only=True)
    model.max_seq_length = embeddings.MAX_SEQ_LENGTH
    return model


def _head_from_logreg(vectors, labels):
    """A torch Linear layer holding a logistic regression fitted on `vectors` (LP step)."""
    import torch

    regression = LogisticRegression(C=10.0, max_iter=2000).fit(vectors, labels)
    head = torch.nn.Linear(vectors.shape[1], len(regression.classes_))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(regression.coef_.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(regression.intercept_.astype(np.float32)))
    return head


# --- main -------------------------------------------------------------------------------------


def summary(name, results, labels, folds, seed) -> dict:
    labels = np.array(labels, dtype=object)
    classes = sorted(set(labels))
    f1s, accs = [], []
    oof = np.full((len(labels), len(classes)), np.nan)
    for (_, test), r in zip(folds, results):
        predicted = [classes[i] for i in r.proba.argmax(1)]
        f1s.append(f1_score(labels[test], predicted, average="weighted"))
        accs.append(accuracy_score(labels[test], predicted))
        oof[test] = r.proba
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / f"{name}-seed{seed}.npy", oof)
    record = {
        "name": name, "seed": seed, "folds": len(folds),
        "weighted_f1": round(float(np.mean(f1s)), 4), "weighted_f1_std": round(float(np.std(f1s)), 4),
        "weighted_f1_folds": [round(float(x), 4) for x in f1s],
        "accuracy": round(float(np.mean(accs)), 4),
        "train_seconds": [round(r.train_seconds, 1) for r in results],
        "cpu_seconds": [round(r.cpu_seconds, 1) for r in results],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    extras = [r.extra for r in results if r.extra]
    if extras:
        record["per_fold"] = extras
    return record


def plan() -> list[str]:
    names = (["select_" + a for a in training.ALGORITHMS] + ["select_all", "soft_vote", "soft_vote3", "stacking"]
             + list(FINE_TUNING) + [f"{n}+tfidf" for n in FINE_TUNING])
    return [n for n in ONLY if n in names] if ONLY else names  # in the order asked


class Comparison:
    """The variants of one seed: each computed once, on the same outer folds, when first needed."""

    def __init__(self, texts, labels, seed):
        self.texts, self.labels, self.seed = texts, labels, seed
        self.folds = training.cv_folds(labels, FOLDS, seed)[:MAX_FOLDS]
        self.done: dict[str, list[FoldResult]] = {}

    def get(self, name: str) -> list[FoldResult]:
        if name not in self.done:
            self.done[name] = self._compute(name)
        return self.done[name]

    def _compute(self, name: str) -> list[FoldResult]:
        texts, labels, folds, seed = self.texts, self.labels, self.folds, self.seed
        if name.startswith("select_"):
            algorithm = name.removeprefix("select_")
            run = product_selection(None if algorithm == "all" else [algorithm])
            return score_variant(run, texts, labels, folds, seed)
        if name in FINE_TUNING:
            return score_variant(fine_tuned(FINE_TUNING[name]), texts, labels, folds, seed)
        if name == "soft_vote":
            return soft_vote([self.get(b) for b in BASES[:2]], labels, folds)
        if name == "soft_vote3":
            return soft_vote([self.get(b) for b in BASES], labels, folds)
        if name == "stacking":
            return stacking([self.get(b) for b in BASES], labels, folds)
        if name.endswith("+tfidf"):
            return averaged(self.get(name.removesuffix("+tfidf")), self.get("select_tfidf_logreg"))
        raise SystemExit(f"Unknown variant {name!r}")


def main() -> None:
    texts, labels = dataset()
    for seed in SEEDS:
        comparison = Comparison(texts, labels, seed)
        for name in plan():
            emit(summary(name, comparison.get(name), labels, comparison.folds, seed))


if __name__ == "__main__":
    main()
