"""Bench: sentence-embedding variants side by side, one JSON object per line on stdout.

    .venv/bin/python bench/embeddings.py

Encodes two text sets with each variant, interleaved over BENCH_ROUNDS rounds (default 3) so a
busy machine slows every variant alike, and prints the median wall seconds, CPU seconds
(time.process_time, all threads of this process) and items/s:
  dataset   the shared dataset's items (title + " " + description; ~31 word pieces on average)
  bench     BENCH_EMBED (default 1000) synthetic items as bench/modeling.py builds them (made-up
            words: ~99 word pieces each, three times the real items' length)
Variants: the float32 model at several batch sizes and torch thread counts, the same model with its
Linear layers dynamically quantized to int8, and, when onnxruntime can be imported (BENCH_ORT_PATH
is put on sys.path for a trial install outside the venv), the transformer exported to ONNX.

Quality guard for each variant that changes the vectors, on the shared dataset only: 5-fold
stratified cross-validated weighted F1 of logistic regression on the vectors (the same folds for
every variant) and the cosine similarity of each vector with the float32 one.

fanout: the app's own background path end to end, with real Celery worker processes on
PostgreSQL (BENCH_POSTGRES_URL, default database labelloop_bench_embeddings, created if missing)
and Redis (BENCH_REDIS_URL) on a private queue. BENCH_FANOUT_ITEMS (default 3,000) items, copies
of the shared dataset's (each copy's titles marked, so the importer keeps them), are imported by
labeling.importer into a fresh project; the chunks of modeling.vectors.plan are sent as
modeling.tasks.embed_chunk_task (BENCH_FANOUT_CHUNK items each, default modeling.vectors.CHUNK);
timed from the first send until every item has its vector.
Per worker (BENCH_FANOUT_CONCURRENCY, default "1,2": `celery worker --concurrency=N`, the Procfile's
prefork pool; 2 is the Procfile's worker) twice: right after the worker started (each pool process
loads the encoder in its first chunk: "encoder_loaded": false) and again on a second fresh project.

BENCH_ONLY: comma-separated; "fanout" selects that section, any other word selects the variants
whose names contain it (BENCH_ONLY=int8 runs only the int8 variants and no fan-out).
"""
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.env import env_int
from bench.modeling import learnable_rows
from bench.workers import celery_workers

DATASET = Path(os.environ.get("BENCH_DATASET", "/work/shared/data/mwml/dataset.csv"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
EMBED = int(os.environ.get("BENCH_EMBED", "1000"))
ORT_PATH = os.environ.get("BENCH_ORT_PATH", "")
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
FANOUT_ITEMS = env_int("BENCH_FANOUT_ITEMS", 3000)
FANOUT_CONCURRENCY = [int(n) for n in os.environ.get("BENCH_FANOUT_CONCURRENCY", "1,2").split(",") if n]
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/labelloop_bench_embeddings")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FANOUT_CHUNK = env_int("BENCH_FANOUT_CHUNK", 0)  # 0: modeling.vectors.CHUNK
FANOUT_SLUG = "bench-embeddings-fanout"

Encode = Callable[[list[str]], np.ndarray]


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def dataset() -> tuple[list[str], list[str]]:
    with DATASET.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [f"{r['title']} {r['description']}".strip() for r in rows], [r["tag"] for r in rows]


def bench_texts() -> list[str]:
    return [f"{title} {text}" for title, text, _ in learnable_rows(EMBED, 1)]


# --- variants ---------------------------------------------------------------------------------


def st_variant(model, batch_size: int, threads: int) -> Encode:
    import torch

    def encode(texts: list[str]) -> np.ndarray:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)

    return encode


def quantized(model):
    """A copy of the SentenceTransformer with its Linear layers dynamically quantized to int8."""
    import copy

    import torch

    copied = copy.deepcopy(model)
    # `auto_model` is a read-only property over `model`: replace the module itself.
    copied[0].model = torch.ao.quantization.quantize_dynamic(copied[0].model, {torch.nn.Linear}, dtype=torch.qint8)
    return copied


def ort_variant(model, folder: Path, quantize: bool, batch_size: int, threads: int) -> Encode:
    """The transformer exported to ONNX (optionally int8 by onnxruntime); tokenizer, mean pooling
    and normalization as sentence-transformers does them."""
    import onnxruntime

    path = folder / "model.onnx"
    if not path.exists():
        _export(model, path)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized_path = folder / "model.int8.onnx"
        quantize_dynamic(str(path), str(quantized_path), weight_type=QuantType.QInt8)
        path = quantized_path
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tokenizer, max_length = model.tokenizer, model.max_seq_length

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                              max_length=max_length, return_tensors="np")
            feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[index] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return encode


def _export(model, path: Path) -> None:
    import torch

    bert = model[0].auto_model
    sample = model.tokenizer(["a short sample", "another sample text"], padding=True, return_tensors="pt")
    args = (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"])
    axes = {0: "batch", 1: "sequence"}

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    torch.onnx.export(
        Wrapper().eval(), args, str(path), input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"], opset_version=17, dynamo=False,
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
    )


def variants(model, only: set[str]) -> dict[str, tuple[Encode, float]]:
    """name -> (encode, seconds it took to prepare)."""
    found: dict[str, tuple[Encode, float]] = {}
    for batch in (32, 64, 128):
        found[f"fp32_b{batch}_t2"] = (st_variant(model, batch, 2), 0.0)
    found["fp32_b64_t1"] = (st_variant(model, 64, 1), 0.0)
    started = time.perf_counter()
    int8 = quantized(model)
    prepared = time.perf_counter() - started
    for batch in (64,):
        found[f"int8_b{batch}_t2"] = (st_variant(int8, batch, 2), prepared)
    found["int8_b64_t1"] = (st_variant(int8, 64, 1), prepared)
    if ORT_PATH:
        sys.path.insert(0, ORT_PATH)
        folder = Path(tempfile.mkdtemp(prefix="emb-onnx-"))
        for quantize in (False, True):
            started = time.perf_counter()
            try:
                encode = ort_variant(model, folder, quantize, 64, 2)
            except Exception as error:  # noqa: BLE001 - a trial: say why the variant is missing, go on
                emit({"name": "onnx", "quantize": quantize, "error": repr(error)[:300]})
                continue
            prepared = time.perf_counter() - started
            tag = "onnx_int8" if quantize else "onnx_fp32"
            found[f"{tag}_b64_t2"] = (encode, prepared)
            found[f"{tag}_b64_t1"] = (ort_variant(model, folder, quantize, 64, 1), prepared)
    return {name: v for name, v in found.items() if not only or any(o in name for o in only)}


# --- measurements -----------------------------------------------------------------------------


def timed(encode: Encode, texts: list[str]) -> tuple[np.ndarray, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = np.asarray(encode(texts), dtype=np.float32)
    return vectors, time.perf_counter() - wall, time.process_time() - cpu


def cv_f1(vectors: np.ndarray, labels: list[str], fit_on: np.ndarray | None = None) -> float:
    """Mean weighted F1 over the same 5 stratified folds. With `fit_on`, each fold's regression is
    fitted on those vectors and scored on `vectors`: a model trained before a switch of encoder."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    labels_array, fit_on = np.asarray(labels), vectors if fit_on is None else fit_on
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = []
    for train, test in folds.split(vectors, labels_array):
        model = LogisticRegression(max_iter=2000).fit(fit_on[train], labels_array[train])
        scores.append(f1_score(labels_array[test], model.predict(vectors[test]), average="weighted"))
    return float(np.mean(scores))


def bench_variants(only: set[str]) -> None:
    from modeling import embeddings

    # The float32 model is the reference every variant is made from and compared with.
    configured, embeddings.QUANTIZE_INT8 = embeddings.QUANTIZE_INT8, False
    try:
        _bench_variants(only)
    finally:
        # The fan-out section looks for vectors under the configured encoder's name.
        embeddings.QUANTIZE_INT8, embeddings._encoder = configured, None


def _bench_variants(only: set[str]) -> None:
    from modeling import embeddings

    started = time.perf_counter()
    model = embeddings.encoder()
    emit({"name": "load", "seconds": round(time.perf_counter() - started, 2), "max_seq_length": model.max_seq_length})
    texts, labels = dataset()
    sets = {"dataset": texts, "bench": bench_texts()}
    found = variants(model, only)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    vectors: dict[str, np.ndarray] = {}
    for name, (encode, _) in found.items():  # warm-up: first calls allocate and pick kernels
        encode(texts[:64])
    for _ in range(ROUNDS):
        for name, (encode, _) in found.items():
            for set_name, set_texts in sets.items():
                result, wall, cpu = timed(encode, set_texts)
                runs.setdefault((name, set_name), []).append((wall, cpu))
                if set_name == "dataset":
                    vectors[name] = result
    reference = vectors.get("fp32_b64_t2")
    reference_f1 = cv_f1(reference, labels) if reference is not None else None
    for name, (_, prepared) in found.items():
        record = {"name": name, "prepare_seconds": round(prepared, 2)}
        for set_name, set_texts in sets.items():
            wall = statistics.median(w for w, _ in runs[(name, set_name)])
            cpu = statistics.median(c for _, c in runs[(name, set_name)])
            record[set_name] = {"items_per_s": round(len(set_texts) / wall, 1), "seconds": round(wall, 2),
                                "cpu_seconds": round(cpu, 2), "cpu_ms_per_item": round(1000 * cpu / len(set_texts), 2)}
        if reference is not None:
            cosine = np.sum(vectors[name] * reference, axis=1)
            f1 = cv_f1(vectors[name], labels)
            crossed = cv_f1(vectors[name], labels, fit_on=reference)
            record["quality"] = {"cv_f1_weighted": round(f1, 4), "cv_f1_delta": round(f1 - reference_f1, 4),
                                 "cv_f1_fit_fp32_delta": round(crossed - reference_f1, 4),
                                 "cosine_mean": round(float(cosine.mean()), 5), "cosine_min": round(float(cosine.min()), 5)}
        emit(record)


# --- fan-out: background embeddings in real workers ---------------------------------------------


def bench_fanout() -> None:
    _configure_django()
    from django.core.management import call_command

    from modeling import embeddings

    if not embeddings.available():
        emit({"name": "fanout", "skipped": "the [embeddings] extra is not installed"})
        return
    call_command("migrate", verbosity=0)
    rows = _dataset_titles_and_descriptions()
    for concurrency in FANOUT_CONCURRENCY:
        queue = f"labelloop-bench-embfan-{os.getpid()}-{concurrency}"
        with celery_workers(REDIS_URL, queue, concurrency=concurrency) as (worker,):
            for round_ in range(2):
                _fanout_round(queue, concurrency, rows, encoder_loaded=round_ > 0, worker=worker)
    _fresh_project().delete()


def _configure_django() -> None:
    from bench.modeling import _create_postgres_database

    _create_postgres_database(PG_URL)
    os.environ["DATABASE_URL"] = PG_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # This process only imports and watches: what its imports queue after commit stays in memory
    # (the workers are sent their chunks below, on their own queue).
    os.environ["CELERY_BROKER_URL"] = "memory://"
    import django

    django.setup()


def _dataset_titles_and_descriptions() -> list[tuple[str, str]]:
    with DATASET.open(newline="", encoding="utf-8") as handle:
        return [(r["title"], r["description"]) for r in csv.DictReader(handle)]


def _fanout_csv(rows: list[tuple[str, str]], count: int) -> bytes:
    """`count` items: the dataset's, then copies of it whose titles say which copy (the importer
    drops exact duplicates); the marks add a word piece or three to a ~31-piece text."""
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["title", "description"])
    for n in range(count):
        title, description = rows[n % len(rows)]
        copy = n // len(rows)
        writer.writerow([f"{title} ({copy})" if copy else title, description])
    return out.getvalue().encode()


def _fresh_project():
    from labeling import actions
    from labeling.models import Project

    Project.objects.filter(slug=FANOUT_SLUG).delete()  # its items and vectors with it
    return actions.create_project(FANOUT_SLUG, FANOUT_SLUG)


def _fanout_round(queue: str, concurrency: int, rows, encoder_loaded: bool, worker) -> None:
    import io

    from config.celery import app as celery_app
    from labeling.importer import import_items
    from modeling import vectors
    from modeling.models import Embedding
    from modeling.tasks import embed_chunk_task

    project = _fresh_project()
    imported = import_items(project, io.BytesIO(_fanout_csv(rows, FANOUT_ITEMS)), "fanout.csv")
    planned = time.perf_counter()
    chunks = vectors.plan(project.pk, FANOUT_CHUNK or vectors.CHUNK)
    plan_seconds = time.perf_counter() - planned
    load_before, cpu_before = os.getloadavg()[0], _worker_cpu_seconds(worker.pid)
    started = time.perf_counter()
    with celery_app.connection_for_write(REDIS_URL) as broker:
        for first, last in chunks:
            embed_chunk_task.apply_async((project.pk, first, last), queue=queue, connection=broker)
    while vectors.missing(project.pk).exists():
        if worker.poll() is not None:
            sys.exit(f"the bench worker exited:\n{worker.log_path.read_text()}")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    cpu = _worker_cpu_seconds(worker.pid) - cpu_before
    stored = Embedding.objects.filter(project=project).count()
    emit({
        "name": "fanout", "processes": concurrency, "worker": f"celery worker --concurrency={concurrency}",
        "encoder_loaded": encoder_loaded, "items": imported.created, "stored": stored, "chunks": len(chunks),
        "chunk_items": FANOUT_CHUNK or vectors.CHUNK, "seconds": round(seconds, 2), "items_per_s": round(stored / seconds, 1),
        "target_items_per_s": 150, "plan_seconds": round(plan_seconds, 3),
        # On a shared machine: CPU the worker's processes got, and what that rate is per CPU-second.
        "worker_cpu_seconds": round(cpu, 2), "items_per_cpu_second": round(stored / cpu, 1) if cpu else None,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    })


def _worker_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a worker and its pool processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def main() -> None:
    variant_words = ONLY - {"fanout"}
    if not ONLY or variant_words:
        bench_variants(variant_words)
    if not ONLY or "fanout" in ONLY:
        bench_fanout()


if __name__ == "__main__":
    main()
