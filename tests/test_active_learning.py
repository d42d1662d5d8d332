"""Active learning: the uncertainty measures and queue ranks, and the simulation command."""
import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from modeling import active_learning

from .modeling_data import csv_bytes, rows

PROBA = np.array(
    [
        [0.9, 0.05, 0.05],  # sure
        [0.5, 0.45, 0.05],  # torn between two
        [0.34, 0.33, 0.33],  # no idea
    ]
)


def test_it_measures_uncertainty_three_ways():
    assert active_learning.margins(PROBA) == pytest.approx([0.85, 0.05, 0.01])
    assert active_learning.uncertainty(PROBA, "margin") == pytest.approx([0.15, 0.95, 0.99])
    assert active_learning.uncertainty(PROBA, "least_confidence") == pytest.approx([0.1, 0.5, 0.66])
    entropy = active_learning.uncertainty(PROBA, "entropy")
    assert entropy[0] < entropy[1] < entropy[2] and entropy[2] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="Unknown uncertainty measure"):
        active_learning.uncertainty(PROBA, "vibes")


def test_it_picks_the_most_uncertain_rows_first():
    assert list(active_learning.most_uncertain(PROBA, 2)) == [2, 1]
    assert list(active_learning.most_uncertain(PROBA, 3, "least_confidence")) == [2, 1, 0]


def test_it_gives_every_item_a_distinct_rank_least_confident_first():
    same_margin = [active_learning.uncertainty_rank(0.25, item) for item in (1, 2, 10**9, 2**40 + 3)]
    assert len(set(same_margin)) == 4  # the item id breaks ties: every rank is distinct
    by_margin = [active_learning.uncertainty_rank(margin, 10**9) for margin in (0.0, 0.00001, 0.3, 0.31, 1.0)]
    assert by_margin == sorted(by_margin) and len(set(by_margin)) == 5
    assert active_learning.uncertainty_rank(0.0, 10**9) < active_learning.uncertainty_rank(0.00001, 1)
    assert active_learning.uncertainty_rank(1.0, 2**32 - 1) < 2**63  # fits the BigIntegerField


@pytest.fixture
def labelled_csv(tmp_path):
    path = tmp_path / "labelled.csv"
    data = [(i, title, description, tag) for i, title, description, tag in rows(160, seed=3)]
    path.write_bytes(csv_bytes(data))
    return path


def test_it_prints_learning_curves_for_both_strategies_as_json(labelled_csv, tmp_path):
    out = StringIO()
    plot = tmp_path / "curves.svg"

    call_command(
        "simulate_active_learning", "--csv", str(labelled_csv), "--strategy", "uncertainty,random", "--json",
        "--seeds", "2", "--batch", "10", "--initial", "8", "--plot", str(plot), stdout=out,
    )

    result = json.loads(out.getvalue())
    assert result["items"] == 160 and result["categories"] == 4 and result["seeds"] == [0, 1]
    assert set(result["strategies"]) == {"uncertainty", "random"}
    for name, summary in result["strategies"].items():
        curve = summary["curve"]
        assert [p["labels"] for p in curve] == list(range(8, 128, 10)) + [128]
        assert all(0 <= p["weighted_f1"] <= 1 and p["seeds"] == 2 for p in curve)
        assert summary["pool"] == 128 and summary["test"] == 32
        assert summary["target_f1"] == pytest.approx(0.95 * summary["full_data_f1"], abs=1e-4)
        assert len(summary["labels_to_target_per_seed"]) == 2
        assert result["labels_to_target"][name] == summary["labels_to_target"]
        reached = summary["labels_to_target"]
        assert reached is None or next(p for p in curve if p["labels"] == reached)["weighted_f1"] >= summary["target_f1"]
    # Both strategies start from the same random labels on the same split of each seed.
    assert result["strategies"]["uncertainty"]["curve"][0] == result["strategies"]["random"]["curve"][0]
    assert result["strategies"]["uncertainty"]["full_data_f1"] == result["strategies"]["random"]["full_data_f1"]
    svg = plot.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "<script" not in svg


def test_it_runs_one_strategy_and_prints_a_summary(labelled_csv):
    out = StringIO()
    call_command("simulate_active_learning", "--csv", str(labelled_csv), "--strategy", "random", "--seeds", "1", "--batch", "40", stdout=out)
    assert out.getvalue().startswith("160 items, 4 categories")
    assert "random" in out.getvalue() and "uncertainty" not in out.getvalue()


def test_it_refuses_unknown_strategies_and_missing_files(labelled_csv, tmp_path):
    with pytest.raises(CommandError, match="Unknown strategy"):
        call_command("simulate_active_learning", "--csv", str(labelled_csv), "--strategy", "psychic")
    with pytest.raises(CommandError, match="no such file"):
        call_command("simulate_active_learning", "--csv", str(tmp_path / "missing.csv"), "--strategy", "random")
