"""The demo project `make run` loads: its imported gold must cover every category, or the demo
model has a single class to learn from and the model page shows nothing worth seeing."""
import io
from collections import Counter

import pytest
from django.core.management import call_command

from labeling.models import GoldLabel, Project


@pytest.mark.django_db
def test_it_seeds_gold_for_every_category_in_equal_shares():
    call_command("seed_demo", password="pw-for-tests-1", items=160, stdout=io.StringIO())
    project = Project.objects.get(slug="demo")
    per_category = Counter(c for gold in GoldLabel.objects.filter(item__project=project) for c in gold.categories)

    assert set(per_category) == set(project.categories.values_list("id", flat=True))
    assert len(set(per_category.values())) == 1  # 10 each
    assert sum(per_category.values()) == 40
