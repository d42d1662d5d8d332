"""`manage.py evaluate_csv`: one JSON object, best algorithm chosen by cross-validation on train."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from modeling import embeddings, training
from tests.test_training import synthetic_dataset

FAST_ALGORITHMS = "majority,rules,decision_tree,tfidf_logreg"


def write_csv(path, texts, labels, text_column="description", label_column="tag"):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["title", text_column, label_column])
        for i, (text, label) in enumerate(zip(texts, labels)):
            writer.writerow([f"Item {i}", text, label])
    return str(path)


@pytest.fixture
def csv_pair(tmp_path):
    train = write_csv(tmp_path / "train.csv", *synthetic_dataset(per_category=15, seed=1))
    test = write_csv(tmp_path / "test.csv", *synthetic_dataset(per_category=5, seed=2))
    return train, test


def run(*args) -> str:
    out = io.StringIO()
    call_command("evaluate_csv", *args, stdout=out)
    return out.getvalue()


def test_it_prints_one_json_object_with_every_algorithm(csv_pair):
    train, test = csv_pair
    result = json.loads(
        run("--train", train, "--test", test, "--json", "--algorithms", FAST_ALGORITHMS)
    )

    assert list(result["algorithms"]) == FAST_ALGORITHMS.split(",")
    for scores in result["algorithms"].values():
        assert {
            "weighted_f1",
            "macro_f1",
            "accuracy",
            "intervals",
            "per_class",
            "train_seconds",
            "params",
        } <= set(scores)
        assert set(scores["per_class"]) == {"cooking", "finance", "sports"}
    assert result["n_train"] == 45 and result["n_test"] == 15


def test_it_names_the_best_algorithm_by_cross_validation_not_by_test_score(csv_pair):
    train, test = csv_pair
    result = json.loads(
        run("--train", train, "--test", test, "--json", "--algorithms", FAST_ALGORITHMS)
    )

    cv_scores = {name: scores["cv_weighted_f1"] for name, scores in result["algorithms"].items()}
    assert cv_scores[result["best"]] == max(cv_scores.values())
    assert result["selection"]["algorithm"] == result["best"]
    tried = {c["algorithm"] for c in result["selection"]["candidates"]}
    assert tried == set(FAST_ALGORITHMS.split(","))


def test_it_tunes_each_algorithm_the_way_training_does(csv_pair):
    train, test = csv_pair
    result = json.loads(
        run("--train", train, "--test", test, "--json", "--algorithms", "tfidf_logreg")
    )
    texts, labels = synthetic_dataset(per_category=15, seed=1)
    _, report = training.select_and_fit(
        [training.item_text(f"Item {i}", text) for i, text in enumerate(texts)],
        labels,
        algorithms=["tfidf_logreg"],
    )

    assert result["algorithms"]["tfidf_logreg"]["params"] == report["params"]
    assert result["algorithms"]["tfidf_logreg"]["cv_weighted_f1"] == report["cv_weighted_f1"]


def test_it_reads_text_and_label_columns(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        *synthetic_dataset(per_category=6),
        text_column="text",
        label_column="label",
    )
    result = json.loads(
        run("--train", train, "--test", train, "--json", "--algorithms", "majority")
    )

    assert result["algorithms"]["majority"]["accuracy"] == pytest.approx(1 / 3)


def test_it_prints_a_table_without_json(csv_pair):
    train, test = csv_pair
    output = run("--train", train, "--test", test, "--algorithms", "majority,tfidf_logreg")

    assert "tfidf_logreg" in output
    assert "Best by cross-validation on the training CSV: tfidf_logreg" in output


def test_it_explains_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run("--train", str(tmp_path / "absent.csv"), "--test", str(tmp_path / "absent.csv"))


def test_it_explains_a_missing_label_column(tmp_path):
    path = tmp_path / "unlabelled.csv"
    path.write_text("title,description\nA,b\n", encoding="utf-8")

    with pytest.raises(CommandError, match="no label column: expected 'tag' or 'label'"):
        run("--train", str(path), "--test", str(path))


def test_it_explains_a_missing_text_column(tmp_path):
    path = tmp_path / "textless.csv"
    path.write_text("id,tag\n1,a\n", encoding="utf-8")

    with pytest.raises(CommandError, match="no text column"):
        run("--train", str(path), "--test", str(path))


def test_it_names_the_line_of_an_empty_label(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("title,tag\nA,x\nB,\n", encoding="utf-8")

    with pytest.raises(CommandError, match="line 3"):
        run("--train", str(path), "--test", str(path))


def test_it_refuses_an_unknown_algorithm(csv_pair):
    train, test = csv_pair
    with pytest.raises(CommandError, match="Unknown or unavailable algorithm"):
        run("--train", train, "--test", test, "--algorithms", "majority,svm")


@pytest.mark.embeddings
@pytest.mark.skipif(not embeddings.available(), reason="the [embeddings] extra is not installed")
def test_it_includes_the_embedding_algorithms_by_default(csv_pair):
    train, test = csv_pair
    result = json.loads(run("--train", train, "--test", test, "--json"))

    assert set(result["algorithms"]) == set(training.ALGORITHMS)
    assert {"embeddings_logreg", "embeddings_tfidf_logreg"} <= set(result["algorithms"])
