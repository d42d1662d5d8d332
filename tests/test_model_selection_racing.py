"""Model selection on big training sets: every candidate is scored on the first fold, only the best
third goes on to the other folds (training.screen), and small sets are never screened."""
import random

from modeling import training

TOPICS = {
    "vision": ["image", "pixel", "camera", "segmentation", "detection"],
    "language": ["text", "token", "sentence", "translation", "grammar"],
    "ops": ["deploy", "docker", "pipeline", "monitoring", "serving"],
}
FILLER = ["model", "data", "train", "project", "using", "simple", "fast", "new", "open", "tool"]


def corpus(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for n in range(count):
        label = list(TOPICS)[n % len(TOPICS)]
        words = rng.choices(FILLER, k=8) + rng.choices(TOPICS[label], k=2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_it_scores_only_the_best_third_on_every_fold_of_a_big_training_set():
    texts, labels = corpus(training.SCREENING_MIN_TEXTS + 100)
    names = ["majority", "tfidf_logreg"]
    grid_size = sum(len(list(training.ParameterGrid(training.ALGORITHMS[n].param_grid))) for n in names)

    model, report = training.select_and_fit(texts, labels, algorithms=names)

    folds = [c["folds"] for c in report["candidates"]]
    assert len(folds) == grid_size  # every candidate reported once
    finalists = [c for c in report["candidates"] if c["folds"] == report["cv_folds"]]
    assert len(finalists) == -(-grid_size // training.SCREENING_KEEPS_ONE_IN)
    assert folds.count(1) == grid_size - len(finalists)
    assert "majority" not in {c["algorithm"] for c in finalists}  # a one-fold look is enough for it
    chosen = {"algorithm": report["algorithm"], "params": report["params"]}
    assert chosen["algorithm"] == "tfidf_logreg"
    assert report["cv_weighted_f1"] == max(c["cv_weighted_f1"] for c in finalists)
    assert model.predict(["docker pipeline deploy"]) == ["ops"]


def test_it_never_screens_a_small_training_set():
    texts, labels = corpus(300)

    _, report = training.select_and_fit(texts, labels, algorithms=["majority", "tfidf_logreg"])

    assert {c["folds"] for c in report["candidates"]} == {report["cv_folds"]}


def test_screening_keeps_the_earlier_candidate_on_a_tie():
    texts, labels = corpus(training.SCREENING_MIN_TEXTS)
    folds = training.cv_folds(labels, 5, 0)
    grid = [("majority", {}), ("majority", {}), ("majority", {}), ("majority", {})]

    screened, kept = training.screen(grid, texts, labels, folds)

    assert len(screened) == 4 and all(c.folds == 1 for c in screened)
    assert kept == grid[:2]
