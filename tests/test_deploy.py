"""Production settings: Django's deployment checks pass, a missing SECRET_KEY stops start-up with a
message that says what to do, and DEBUG is off unless the embedded mode is running.

Each case runs in a fresh interpreter, because settings are read once per process."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[1]
CLEAN = {
    "DJANGO_ENV",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DJANGO_SETTINGS_MODULE",
}


def run(args, tmp_path, **env):
    environment = {k: v for k, v in os.environ.items() if k not in CLEAN}
    environment.update(LABELLOOP_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def production(**extra):
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "labelloop.example",
        **extra,
    }


def setting(name, tmp_path, **env):
    result = run(["-c", f"import config.settings as s; print(repr(s.{name}))"], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_it_passes_the_deployment_checks_in_production(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **production()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_fails_the_deployment_checks_with_a_weak_secret_key(tmp_path):
    # The check above could not fail if --deploy found nothing to look at; this one shows it does.
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        tmp_path,
        **production(SECRET_KEY="short"),
    )
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


@pytest.mark.parametrize("mode", [{"DJANGO_ENV": "production"}, {"DEBUG": "0"}])
def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path, mode):
    result = run(["manage.py", "check"], tmp_path, **mode)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr  # the message says how to make one


def test_it_turns_debug_off_in_production_by_default(tmp_path):
    assert setting("DEBUG", tmp_path, **production()) == "False"


def test_it_turns_debug_on_only_in_the_embedded_mode(tmp_path):
    assert setting("DEBUG", tmp_path) == "True"
    assert setting("PRODUCTION", tmp_path) == "False"


def test_it_allows_no_host_in_production_unless_told(tmp_path):
    env = production()
    del env["ALLOWED_HOSTS"]
    assert setting("ALLOWED_HOSTS", tmp_path, **env) == "[]"


def test_it_sends_secure_cookies_and_hsts_in_production(tmp_path):
    env = production()
    assert setting("SESSION_COOKIE_SECURE", tmp_path, **env) == "True"
    assert setting("CSRF_COOKIE_SECURE", tmp_path, **env) == "True"
    assert int(setting("SECURE_HSTS_SECONDS", tmp_path, **env)) >= 31536000
