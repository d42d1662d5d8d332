"""Regex rules run with a size and a time bound: a catastrophic pattern such as `(a+)+$` is refused
when saved (form and action), and one that got in anyway costs one timeout, not one per item."""
import pickle
import time

import pytest
from django.test import Client

from modeling import actions, training
from modeling.models import Rule
from modeling.training import InvalidRule, KeywordRules

CATASTROPHIC = r"(a+)+$"
NEAR_MATCH = "a" * 5000 + "!"  # `re` would backtrack on this for longer than the universe exists


def test_it_refuses_a_catastrophic_pattern_within_the_time_bound():
    started = time.monotonic()
    with pytest.raises(InvalidRule, match="catastrophic backtracking"):
        training.check_rule(CATASTROPHIC)
    # One probe times out after MATCH_TIMEOUT_SECONDS; the slack is for a busy machine.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("pattern", [r"(\w+\s?)*$", r"(a|aa)+$", r"(x+x+)+y"])
def test_it_refuses_other_nested_repetitions(pattern):
    with pytest.raises(InvalidRule, match="takes too long"):
        training.check_rule(pattern)


def test_it_accepts_ordinary_patterns_and_keywords():
    for pattern in [r"\bseq2seq\b", r"neural (net|network)s?", training.keyword_pattern("c++")]:
        assert training.check_rule(pattern)
    assert training.compile_pattern(r"\bBERT\b").search("fine-tuning bert here")  # case-insensitive


def test_it_refuses_oversized_and_invalid_patterns():
    with pytest.raises(InvalidRule, match="limit is 500"):
        training.check_rule("a" * (training.MAX_PATTERN_CHARS + 1))
    with pytest.raises(InvalidRule, match="not a valid regular expression"):
        training.check_rule("(unclosed")


def test_a_rule_that_times_out_counts_as_no_match_and_is_switched_off():
    # As if the rule had been stored before the check existed (or written straight to the table).
    model = KeywordRules({"slow": [CATASTROPHIC], "fast": [r"\bquick\b"]})
    model.fit(["x", "y", "z"], ["slow", "fast", "fast"])
    texts = [NEAR_MATCH] * 40 + ["a quick one"]

    started = time.monotonic()
    labels = model.predict(texts)
    elapsed = time.monotonic() - started

    # One timeout for the first text, then the rule is skipped: 40 timeouts would take 10 s or more.
    assert elapsed < 5, elapsed
    assert model.timed_out_ == {CATASTROPHIC}
    assert labels[:40] == ["fast"] * 40  # no votes: the majority class
    assert labels[40] == "fast"


def test_it_round_trips_a_fitted_rules_model_through_pickle():
    # Artifacts are joblib (pickle) files: the compiled `regex` patterns must survive it.
    model = KeywordRules({"nlp": [training.keyword_pattern("tokenizer")], "cv": [r"\bimages?\b"]})
    model.fit(["a", "b"], ["nlp", "cv"])
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded.predict(["a tokenizer", "many images"]) == ["nlp", "cv"]


@pytest.mark.django_db
def test_the_rules_form_refuses_a_catastrophic_pattern_and_saves_nothing(project, member):
    admin = Client()
    admin.force_login(member("admin").user)
    nlp = project.categories.get(name="natural-language-processing")

    page = admin.post(f"/p/{project.slug}/model/rules/", {"category": nlp.id, "pattern": CATASTROPHIC, "is_regex": "on"}, follow=True)

    assert page.status_code == 200
    assert "The rule was not saved" in page.content.decode()
    assert "catastrophic backtracking" in page.content.decode()
    assert not Rule.objects.exists()
    # The same text as a keyword is a literal and harmless.
    assert actions.add_rule(project, nlp.id, CATASTROPHIC, is_regex=False).pattern == CATASTROPHIC
