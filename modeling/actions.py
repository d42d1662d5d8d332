"""Writes of the modeling app made by people (rules and slices); each is one durable transaction.
Training runs are written by modeling.runs."""
import re

from django.db import IntegrityError, transaction

from labeling.models import Category, Project

from . import evaluation, training
from .models import Rule, Slice


class ModelingError(ValueError):
    """A refused edit; the message says what to change."""


def add_rule(project: Project, category_id: int, pattern: str, is_regex: bool) -> Rule:
    """A keyword (whole word, case-insensitive) or a regular expression pointing to a category."""
    pattern = pattern.strip()
    if not pattern:
        raise ModelingError("Write a keyword or a pattern.")
    category = Category.objects.filter(project=project, pk=category_id).first()
    if category is None:
        raise ModelingError("Choose one of this project's categories.")
    try:
        training.check_rule(pattern if is_regex else training.keyword_pattern(pattern))
    except training.InvalidRule as error:
        raise ModelingError(str(error)) from None
    try:
        with transaction.atomic(durable=True):
            return Rule.objects.create(project=project, category=category, pattern=pattern, is_regex=is_regex)
    except IntegrityError:
        raise ModelingError(f"{category.name} already has the rule {pattern!r}.") from None


def delete_rule(project: Project, rule_id: int) -> bool:
    with transaction.atomic(durable=True):
        deleted, _ = Rule.objects.filter(project=project, pk=rule_id).delete()
    return bool(deleted)


_SEPARATORS = re.compile(r"[,\n]")


def add_slice(project: Project, name: str, keywords: str) -> Slice:
    """A named subset of the holdout: items containing any of the keywords (comma-separated)."""
    name = name.strip()
    words = list(dict.fromkeys(word.strip() for word in _SEPARATORS.split(keywords) if word.strip()))
    if not name:
        raise ModelingError("Give the slice a name.")
    if name == "short_text":
        raise ModelingError('"short_text" is a built-in slice (texts under 8 words); choose another name.')
    if not words:
        raise ModelingError("List at least one keyword, separated by commas.")
    if len(" ".join(words)) > training.MAX_PATTERN_CHARS:
        raise ModelingError(f"Keep a slice's keywords under {training.MAX_PATTERN_CHARS} characters in all.")
    # Checked the way evaluation will use them, so a slice never breaks a training run.
    evaluation.slice_metrics(["x"], ["x"], ["x"], {name: words})
    try:
        with transaction.atomic(durable=True):
            return Slice.objects.create(project=project, name=name[:100], keywords=words)
    except IntegrityError:
        raise ModelingError(f"There is already a slice named {name!r}.") from None


def delete_slice(project: Project, slice_id: int) -> bool:
    with transaction.atomic(durable=True):
        deleted, _ = Slice.objects.filter(project=project, pk=slice_id).delete()
    return bool(deleted)
