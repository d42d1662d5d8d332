"""Faults staged by stopping or killing real services. Each test starts its own PRIVATE instance
(a redis-server on a free port, a PostgreSQL cluster made with initdb under /tmp) and stops that
one: the shared PostgreSQL on 5432 and Redis on 6379 are never touched.

- A Celery pool process SIGKILLed in the middle of a training run: the serving model and its file
  are untouched, acks_late + reject_on_worker_lost hand the message to a new pool process, the run
  is retried (by the periodic check once the run's heartbeat has stopped, which also removes the
  dead run's temporary artifact) and the next run succeeds.
- Redis stopped while annotators work: labeling goes on in bounded time; work queued before the
  outage survives it (append-only file) and is done when Redis and a worker return; the training
  run requested during the outage (its message never left) is queued again by the periodic check.
- PostgreSQL stopped under a running gunicorn: clear 503 page / JSON, nothing half-written, and the
  same gunicorn worker process serves 200 again once PostgreSQL is back.

The default suite runs each in a short form (the fault and what must hold right after it);
`make faults` (FAULTS_FULL=1) adds the slow halves: the run after the retried one, and the training
run asked for during the Redis outage.
Under CI=true a missing redis-server or initdb fails instead of skipping.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling import actions
from labeling.models import Annotation, Project, Role
from modeling import artifacts, runs, serving
from modeling.models import ModelVersion, Prediction
from modeling.tasks import check_retraining

from . import services
from .broker import forget_broker_connections
from .conftest import require
from .modeling_data import load
from .test_celery_worker import env_for

BIN = Path(sys.executable).parent
FULL = os.environ.get("FAULTS_FULL") == "1"
ALGORITHMS = "majority,rules,tfidf_logreg"
# The workers' hard time limit in these tests: the killed run's retry must come well before it.
HARD_LIMIT_SECONDS = 25
# The workers' heartbeat: a run silent for runs.DEAD_AFTER_BEATS of these has lost its worker.
HEARTBEAT_SECONDS = 2

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1, log=None):
    """The first truthy value of condition(); fails the test after `timeout` seconds, showing
    log() (a worker's log) if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"gave up after {timeout:.0f}s waiting for {what}" + (f"\n{log()}" if log else ""))


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def pool_process(worker: subprocess.Popen) -> int:
    """The worker's one pool process. Asked for when it is needed, not at start: a starting worker
    also has short-lived children (matplotlib's font scan runs fc-list, forked from the worker), and
    one of them, taken for the pool process, is gone by the time it is killed."""

    def settled():
        pool = children(worker.pid)
        return pool[0] if len(pool) == 1 else None

    return wait_for(settled, 60, "the worker's one pool process", interval=0.02, log=worker.log)


# --- a private Redis ---------------------------------------------------------------------------


class PrivateRedis:
    """redis-server on a free loopback port, with an append-only file so that what was queued
    survives a stop, as a production broker should be configured."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.process = folder, free_port(), None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: services.redis_reachable(self.url), 15, f"the private redis on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # a clean shutdown: the append-only file is complete
            self.process.wait(timeout=15)

    def queued(self, queue: str) -> int:
        return redis.Redis.from_url(self.url).llen(queue)


@pytest.fixture
def private_redis(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server")
    broker = PrivateRedis(tmp_path / "redis")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def app_on_private_redis(private_redis):
    """This process's Celery app publishes to the private Redis (as the web would in production)."""
    from config.celery import app

    saved = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url = private_redis.url
    app.conf.broker_transport_options = {"visibility_timeout": 3600, "socket_timeout": 3}
    forget_broker_connections(app)
    yield app
    app.conf.broker_url, app.conf.broker_transport_options = saved
    forget_broker_connections(app)


@pytest.fixture
def model_algorithms():
    return ALGORITHMS.split(",")


@pytest.fixture
def start_worker(private_redis, app_on_private_redis, model_dir, tmp_path):
    """A real Celery worker on the private Redis and the test database (prefork, one process)."""
    started = []

    def start(**extra_env) -> subprocess.Popen:
        env = {
            **env_for(private_redis.url, app_on_private_redis.conf.task_default_queue),
            "MODEL_DIR": str(model_dir), "TRAIN_ALGORITHMS": ALGORITHMS,
            "TRAIN_TIME_LIMIT": str(HARD_LIMIT_SECONDS), "TRAIN_SOFT_TIME_LIMIT": str(HARD_LIMIT_SECONDS - 5),
            "RUN_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS), **extra_env,
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [
                    str(BIN / "celery"), "-A", "config", "worker", "--pool=prefork", "--concurrency=1",
                    "-n", f"faults-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "--loglevel=INFO",
                ],
                cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        process.log_path = log_path
        process.log = log_path.read_text
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # cold: nothing left to finish here
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_of(version_id: int) -> ModelVersion:
    return ModelVersion.objects.get(pk=version_id)


def wait_until_finished(version_id: int, worker, timeout: float = 120) -> ModelVersion:
    def finished():
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode}:\n{worker.log()}")
        version = run_of(version_id)
        return version if not version.is_running() else None

    return wait_for(finished, timeout, f"run {version_id} to finish", interval=0.25, log=worker.log)


def files_of(folder: Path) -> dict[str, str]:
    return {path.name: artifacts.file_sha256(path) for path in sorted(folder.iterdir())} if folder.exists() else {}


# --- a Celery worker SIGKILLed in the middle of a training run ---------------------------------


@pytest.mark.redis
def test_a_worker_killed_mid_training_changes_nothing_and_the_run_is_retried(project, start_worker, model_dir, app_on_private_redis):
    load(project, gold=60, unlabeled=10)
    serving_version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(serving_version.pk)  # the serving model, trained here
    serving_version.refresh_from_db()
    assert serving_version.active, serving_version.error
    served_files = files_of(model_dir)
    served_predictions = sorted(Prediction.objects.values_list("item_id", "model_version_id", "top_category_id"))
    load(project, gold=40, unlabeled=0, seed=7)  # new gold labels: a genuinely new run
    worker = start_worker()

    version = runs.request_training(project, ModelVersion.Trigger.BUTTON)  # published on commit
    killed, killed_at = _kill_in_the_middle(version.pk, worker, model_dir)
    print(f"pool process {killed} SIGKILLed while the run was {killed_at}")
    first_started = run_of(version.pk).started_at
    # The serving model is untouched: same active version, same files, same predictions.
    assert ModelVersion.objects.get(active=True).pk == serving_version.pk
    assert not run_of(version.pk).active
    assert {name: sha for name, sha in files_of(model_dir).items() if not name.startswith("tmp-")} == served_files
    assert sorted(Prediction.objects.values_list("item_id", "model_version_id", "top_category_id")) == served_predictions
    assert serving.model_for(serving_version).predict(["language text tokens"])  # and still loads

    # acks_late + reject_on_worker_lost: the message went back to the queue and a new pool process
    # took it. The run's last heartbeat is still recent there, so that delivery leaves it alone
    # instead of training it twice at once.
    wait_for(lambda: "'taken'" in worker.log(), 90, "the redelivered message to reach a new pool process", log=worker.log)
    log = worker.log()
    assert "signal 9 (SIGKILL)" in log, log
    assert len(re.findall(r"modeling\.tasks\.train_model_version\[[\w-]+\] received", log)) == 2, log
    assert pool_process(worker) != killed
    assert run_of(version.pk).status in runs.TRAINING_STEPS

    # Its heartbeat has stopped: a few beats later the periodic check runs it again, long before
    # the hard time limit (the run would otherwise wait that out).
    silent = timedelta(seconds=HEARTBEAT_SECONDS * runs.DEAD_AFTER_BEATS + 1)
    wait_for(lambda: timezone.now() > run_of(version.pk).alive_at + silent, 60, "the heartbeat to fall silent")
    check_retraining.delay()  # what beat sends every two minutes
    retried = wait_until_finished(version.pk, worker)
    assert retried.status == ModelVersion.Status.DONE and retried.attempts == 2, retried.error
    assert retried.started_at < first_started + timedelta(seconds=HARD_LIMIT_SECONDS), "it waited for the hard limit"
    assert not list(model_dir.glob("tmp-*")), "the dead run's temporary artifact was left behind"
    active = ModelVersion.objects.get(project=project, active=True)
    assert Path(active.artifact_path).is_file() and artifacts.file_sha256(Path(active.artifact_path)) == active.artifact_sha256

    if not FULL:
        return  # `make faults` goes on: the next run
    load(project, gold=20, unlabeled=0, seed=9)
    following = runs.request_training(project, ModelVersion.Trigger.BUTTON)
    following = wait_until_finished(following.pk, worker)
    assert following.status == ModelVersion.Status.DONE and following.attempts == 1, following.error
    assert not list(model_dir.glob("tmp-*"))


def _kill_in_the_middle(version_id: int, worker: subprocess.Popen, model_dir: Path) -> tuple[int, str]:
    """SIGKILL the worker's pool process once the run is training, at best while its temporary
    artifact is on disk (the hardest moment: a file is half-way to being published). Returns the
    process killed and the run's step."""
    wait_for(lambda: run_of(version_id).status in runs.TRAINING_STEPS, 90, "the run to start training", interval=0.02)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(model_dir.glob("tmp-*")):
        if run_of(version_id).status not in runs.TRAINING_STEPS:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.005)
    status = run_of(version_id).status
    killed = pool_process(worker)
    os.kill(killed, signal.SIGKILL)
    return killed, f"{status}" + (" with its temporary artifact on disk" if list(model_dir.glob("tmp-*")) else "")


# --- Redis stopped while annotators work --------------------------------------------------------


@pytest.mark.redis
def test_labeling_goes_on_while_redis_is_stopped_and_queued_work_resumes(project, member, private_redis, start_worker, app_on_private_redis):
    queue = app_on_private_redis.conf.task_default_queue
    # No run from the gold-label count: the only training run is the one asked for in the outage.
    Project.objects.filter(pk=project.pk).update(retrain_every=0)
    load(project, gold=60, unlabeled=20)  # the import queues its follow-up; no worker is running yet
    assert private_redis.queued(queue) == 1  # the import's follow-up: its recount and retraining check
    annotator = member(Role.ANNOTATOR)
    admin = member(Role.ADMIN)
    people = {annotator: Client(), admin: Client()}
    for membership, client in people.items():
        client.force_login(membership.user)

    private_redis.stop()
    started = time.monotonic()
    category = project.categories.first().pk
    for _ in range(4):
        item_id = actions.claim_stage(annotator, depth=1)[0].item_id
        posted = people[annotator].post(
            reverse("annotate_submit", args=[project.slug]),
            {"item": item_id, "category": category, "request_id": uuid.uuid4().hex},
        )
        assert posted.status_code == 302
    assert people[annotator].get(reverse("annotate", args=[project.slug])).status_code == 200
    assert people[admin].get(reverse("dashboard", args=[project.slug])).status_code == 200  # asks for a recount
    assert people[admin].post(reverse("model_train", args=[project.slug])).status_code == 302
    elapsed = time.monotonic() - started
    print(f"with Redis stopped: 4 submits + annotate page + dashboard + train button in {elapsed:.1f}s")
    assert elapsed < 30  # each publish gives up after its connect timeout and retries: seconds
    assert Annotation.objects.filter(annotator=annotator.user).count() == 4
    lost_run = ModelVersion.objects.get(project=project)
    assert lost_run.status == ModelVersion.Status.QUEUED  # requested; its message never left

    private_redis.start()  # same port, same append-only file
    assert private_redis.queued(queue) == 1  # what was queued before the outage is still there
    worker = start_worker()

    def recounted():
        project.refresh_from_db(fields=["progress"])
        return project.progress.get("annotations") == Annotation.objects.filter(project=project).count()

    wait_for(recounted, 90, "the recount queued before the outage to be done")
    assert project.progress["items"] == 80
    if not FULL:
        return  # `make faults` goes on: the run requested during the outage is trained
    # The run's message was lost with the outage; the periodic check (beat, every two minutes)
    # publishes runs queued longer than LOST_MESSAGE_SECONDS again. Here we skip the wait.
    ModelVersion.objects.filter(pk=lost_run.pk).update(created_at=timezone.now() - timedelta(seconds=runs.LOST_MESSAGE_SECONDS + 1))
    check_retraining.delay()
    done = wait_until_finished(lost_run.pk, worker)
    assert done.status == ModelVersion.Status.DONE and done.active, done.error


# --- PostgreSQL stopped under a running gunicorn ------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A throwaway cluster under /tmp, run as the postgres user when we are root (initdb refuses
    root), trust auth on loopback and a socket in its own folder."""

    def __init__(self, bin_dir: Path):
        self.bin, self.port = bin_dir, free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="labelloop-faults-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.folder, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/labelloop"

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.as_owner, *command], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run([*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def copy_of(self, source: dict) -> None:
        """The test database, schema and rows, restored into database `labelloop` here."""
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "labelloop")
        source_env = {**os.environ, "PGPASSWORD": source["PASSWORD"] or ""}
        dump = subprocess.run(
            [str(self.bin / "pg_dump"), "-h", source["HOST"] or "127.0.0.1", "-p", str(source["PORT"] or 5432),
             "-U", source["USER"], "--no-owner", "--no-privileges", source["NAME"]],
            capture_output=True, env=source_env, timeout=120, check=True,
        )
        restore = subprocess.run(
            [str(self.bin / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "labelloop"],
            input=dump.stdout, capture_output=True, timeout=120, check=False,
        )
        assert restore.returncode == 0, restore.stderr.decode()

    def annotations(self, request_id: str) -> int:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="labelloop") as db, db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM labeling_annotation WHERE client_request_id = %s", [request_id])
            return cursor.fetchone()[0]


@pytest.fixture
def private_postgres():
    bin_dir = _postgres_bin()
    require(bin_dir is not None, "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)")
    cluster = PrivatePostgres(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def gunicorn_on(tmp_path):
    started = []

    def start(database_url: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {
            **os.environ, "DATABASE_URL": database_url, "SECRET_KEY": settings.SECRET_KEY,
            "LABELLOOP_VAR_DIR": str(tmp_path / "var"), "CELERY_BROKER_URL": "filesystem://",
            "DB_CONN_MAX_AGE": "60",  # persistent connections: the case a restart breaks
        }
        log = (tmp_path / "gunicorn.log").open("w")
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread", "--threads", "2"],
            cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base, process, tmp_path), 60, "gunicorn to answer")
        return base, process

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _answers(base: str, process, tmp_path) -> bool:
    if process.poll() is not None:
        pytest.fail("gunicorn exited:\n" + (tmp_path / "gunicorn.log").read_text())
    try:
        urllib.request.urlopen(base + "/accounts/login/", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def http(base: str, path: str, *, token: str | None = None, session: str | None = None, body: dict | None = None):
    """(status, headers, text) of one request, whatever the status."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    if session:
        headers["Cookie"] = f"sessionid={session}"
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(), headers=headers,
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers, refused.read().decode()


@pytest.mark.postgres
def test_postgres_stopped_answers_503_and_the_same_process_recovers(project, member, private_postgres, gunicorn_on):
    from rest_framework.authtoken.models import Token

    load(project, gold=0, unlabeled=10)
    annotator = member(Role.ANNOTATOR)
    token = Token.objects.create(user=annotator.user).key
    browser = Client()
    browser.force_login(annotator.user)
    session = browser.cookies["sessionid"].value
    private_postgres.copy_of(connection.settings_dict)  # this test's rows, in the private cluster
    base, server = gunicorn_on(private_postgres.url)
    annotate = f"/p/{project.slug}/annotate/"
    category = str(project.categories.first().pk)

    assert http(base, annotate, session=session)[0] == 200
    status, _, lease = http(base, f"/api/projects/{project.slug}/claim/", token=token, body={})
    assert status in (200, 201), lease
    item_id = json.loads(lease)["item"]["id"]
    workers = children(server.pid)

    private_postgres.stop()
    started = time.monotonic()
    page = http(base, annotate, session=session)
    api = http(base, f"/api/projects/{project.slug}/claim/", token=token, body={})
    request_id = uuid.uuid4().hex
    submit = {"item": item_id, "categories": [category], "client_request_id": request_id}
    posted = http(base, f"/api/projects/{project.slug}/annotations/", token=token, body=submit)
    elapsed = time.monotonic() - started

    assert page[0] == 503 and page[1]["Retry-After"] == "5", page
    assert "Temporarily unavailable" in page[2]
    assert api[0] == 503 and "unavailable" in json.loads(api[2])["detail"]
    assert posted[0] == 503
    assert elapsed < 15, elapsed

    private_postgres.start()
    assert private_postgres.annotations(request_id) == 0  # nothing half-written
    recovered = time.monotonic()
    assert http(base, annotate, session=session)[0] == 200  # the first request after: no restart
    print(f"PostgreSQL stopped: 3 requests answered 503 in {elapsed:.2f}s; first request after restart "
          f"200 in {time.monotonic() - recovered:.2f}s")
    assert http(base, f"/api/projects/{project.slug}/annotations/", token=token, body=submit)[0] == 201
    assert http(base, f"/api/projects/{project.slug}/annotations/", token=token, body=submit)[0] == 200  # a replay
    assert private_postgres.annotations(request_id) == 1
    assert server.poll() is None and children(server.pid) == workers  # the same worker process
