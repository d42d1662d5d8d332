"""The encoder's faster variant (int8 Linear layers, one torch thread) and how its vectors are kept
apart from float32 ones. Throughput itself is measured by bench/embeddings.py, not asserted here:
timings on a shared machine would make a flaky test."""
import numpy as np
import pytest

from modeling import embeddings, vectors
from modeling.models import Embedding

from .conftest import require
from .modeling_data import load

needs_embeddings = pytest.mark.skipif(
    not embeddings.available(), reason="the [embeddings] extra is not installed"
)


def float32_name() -> str:
    return embeddings.encoder_name().removesuffix("+int8")


def test_it_names_int8_vectors_apart_from_float32(monkeypatch):
    monkeypatch.setattr(embeddings, "QUANTIZE_INT8", False)
    plain = embeddings.encoder_name()
    monkeypatch.setattr(embeddings, "QUANTIZE_INT8", True)

    assert "+" not in plain
    assert embeddings.encoder_name() == (f"{plain}+int8" if embeddings._quantizes() else plain)


@pytest.mark.embeddings
@needs_embeddings
def test_it_runs_the_linear_layers_in_int8_on_one_thread():
    import torch

    model = embeddings.encoder()
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]

    assert embeddings.encoder_name().endswith("+int8")
    assert len(quantized) == 37 and not linear  # 6 layers x (q, k, v, out, 2 feed-forward), pooler
    assert torch.get_num_threads() == embeddings.TORCH_THREADS


@pytest.mark.embeddings
@needs_embeddings
def test_int8_vectors_rank_texts_like_float32_ones():
    texts = ["a photo of a cat", "a picture of a kitten", "quarterly bond yields", "interest rates on government debt"]
    int8 = embeddings.encode(texts)
    from sentence_transformers import SentenceTransformer

    # The same package read again, without quantization.
    reference = SentenceTransformer(str(embeddings.model_path()), device="cpu", local_files_only=True)
    reference.max_seq_length = embeddings.encoder().max_seq_length
    plain = reference.encode(texts, normalize_embeddings=True)

    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
    assert np.min(np.sum(int8 * plain, axis=1)) > 0.85
    nearest = np.argsort(int8 @ int8.T, axis=1)[:, -2]  # [:, -1] is the text itself
    assert nearest.tolist() == np.argsort(plain @ plain.T, axis=1)[:, -2].tolist() == [1, 0, 3, 2]


@pytest.mark.django_db
@pytest.mark.embeddings
def test_it_replaces_vectors_stored_by_the_float32_encoder(project):
    require(embeddings.available(), "the [embeddings] extra")
    load(project, gold=3, unlabeled=0)
    items = [(item.pk, item.title) for item in project.items.order_by("pk")]
    old = np.full(embeddings.DIMENSIONS, 0.5, dtype=np.float32)
    Embedding.objects.create(item_id=items[0][0], project=project, encoder=float32_name(), vector=vectors.to_bytes(old))

    by_text = vectors.ensure(project.pk, items)

    assert set(Embedding.objects.values_list("encoder", flat=True)) == {embeddings.encoder_name()}
    assert Embedding.objects.count() == 3
    assert not np.allclose(by_text[items[0][1]], old)
