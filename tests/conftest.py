import os

import pytest
from django.db import connection

from tests import services

ON_CI = os.environ.get("CI") == "true"


def require(available: bool, what: str) -> None:
    """Skip a test whose service is missing, except under CI=true, where that is a failure."""
    if available:
        return
    if ON_CI:
        pytest.fail(f"{what} is not available and CI=true: this test must run.")
    pytest.skip(f"{what} is not available")


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(config, items):
    # PostgreSQL-only tests run in the PostgreSQL pass of `make test`; the browser test runs in
    # the SQLite pass (once is enough, it drives the same views).
    postgres_pass = os.environ.get("DATABASE_URL", "").startswith("postgres")
    for item in items:
        if "postgres" in item.keywords and not postgres_pass:
            item.add_marker(pytest.mark.skip(reason="runs in the PostgreSQL pass (make test-postgres)"))
        if "browser" in item.keywords and postgres_pass:
            item.add_marker(pytest.mark.skip(reason="runs in the SQLite pass"))


@pytest.fixture(scope="session", autouse=True)
def _own_broker_folder(tmp_path_factory):
    """What the tests publish to the embedded filesystem broker goes to a folder of the run's own,
    not to the checkout's var/broker, where a later `make run` would consume it. Processes the
    tests start (manage.py commands) inherit the folder through the environment."""
    from django.conf import settings

    from config.celery import app

    from .broker import forget_broker_connections

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        yield
        return
    folder, saved = tmp_path_factory.mktemp("broker"), app.conf.broker_transport_options
    moved = {key: value.replace(str(settings.BROKER_DIR), str(folder)) if isinstance(value, str) else value
             for key, value in saved.items()}
    for value in moved.values():
        if isinstance(value, str) and value.startswith(str(folder)):
            os.makedirs(value, exist_ok=True)
    app.conf.broker_transport_options = moved
    forget_broker_connections(app)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CELERY_BROKER_DIR", str(folder))
        yield
    app.conf.broker_transport_options = saved
    forget_broker_connections(app)


@pytest.fixture
def project(db):
    from labeling import actions

    return actions.create_project("Test project", "test")


@pytest.fixture
def make_user(db, django_user_model):
    counter = {"n": 0}

    def make(username=None, password="pw-for-tests-1"):
        counter["n"] += 1
        return django_user_model.objects.create_user(username or f"user{counter['n']}", password=password)

    return make


@pytest.fixture
def member(project, make_user):
    from labeling import actions

    def make(role="annotator", username=None, in_project=None):
        user = make_user(username)
        return actions.add_member(in_project or project, user, role)

    return make


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The default hasher is deliberately slow; tests create hundreds of users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def chromium(monkeypatch):
    """Headless Debian Chromium through Playwright (required under CI=true, else skipped)."""
    require(services.chromium_present(), "Chromium")
    from playwright.sync_api import sync_playwright

    from tests.browser import LAUNCH_ARGS

    # Playwright's sync API keeps an event loop in this thread; the ORM calls a test makes
    # between browser steps are ordinary blocking calls, which Django would otherwise refuse.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=services.CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def model_algorithms() -> list[str]:
    """What a training run in a test may choose from: fast ones. A test module that needs others
    overrides this fixture."""
    return ["majority", "tfidf_logreg"]


@pytest.fixture
def model_dir(settings, tmp_path, model_algorithms):
    """Model artifacts in this test's own folder. The serving cache (per process) and the page
    caches (influence report, gold pace, per project id) start and end empty, so no model or
    report leaks from one test into the next."""
    from django.core.cache import cache

    from modeling import serving

    folder = tmp_path / "models"
    settings.LABELLOOP = {**settings.LABELLOOP, "MODEL_DIR": str(folder), "TRAIN_ALGORITHMS": list(model_algorithms)}
    serving.forget_all()
    cache.clear()
    yield folder
    serving.forget_all()
    cache.clear()
