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


def test_candidates_go_cheapest_features_first_within_each_algorithm():
    grid = [(name, params) for name in ("tfidf_logreg", "majority")
            for params in training.ParameterGrid(training.ALGORITHMS[name].param_grid)]

    ordered = training.cost_ordered(grid)

    assert sorted(map(repr, ordered)) == sorted(map(repr, grid))  # the same candidates
    assert [name for name, _ in ordered] == ["tfidf_logreg"] * (len(grid) - 1) + ["majority"]
    costs = [training.make_estimator(name, params).feature_cost() for name, params in ordered[:-1]]
    assert costs == sorted(costs) and costs[0] == 0 and costs[-1] == 2
    assert ordered[0][1]["word_ngrams"] == (1, 1)


def test_on_a_tie_screening_keeps_and_selection_picks_the_cheaper_features():
    texts, labels = corpus(training.SCREENING_MIN_TEXTS)  # separable: every setting scores 1.0

    _, report = training.select_and_fit(texts, labels, algorithms=["tfidf_logreg"])

    finalists = [c["params"] for c in report["candidates"] if c["folds"] == report["cv_folds"]]
    assert {c["cv_weighted_f1"] for c in report["candidates"]} == {1.0}
    # Single words at every C go on before word pairs; character n-grams not at all.
    assert [tuple(p["word_ngrams"]) for p in finalists].count((1, 1)) == 3
    assert all(p["char_ngrams"] is None for p in finalists)
    assert report["params"]["word_ngrams"] == [1, 1] and report["params"]["char_ngrams"] is None


def test_a_big_training_set_is_offered_no_character_ngrams():
    names = ["majority", "tfidf_logreg"]
    small = training.affordable_grid(names, training.MAX_TEXTS_FOR_CHAR_NGRAMS)
    big = training.affordable_grid(names, training.MAX_TEXTS_FOR_CHAR_NGRAMS + 1)

    assert any(params.get("char_ngrams") for _, params in small)
    assert big == [(name, params) for name, params in small if not params.get("char_ngrams")]
    assert len(big) == 7  # majority + single words and word pairs at three C values
