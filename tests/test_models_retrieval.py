"""The retrieval layer must compute exactly what the stock transformers forward computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.models.retrieval import RetrievalModel

TOLERANCE = 1e-5


def _stock_inputs(
    model: RetrievalModel, images: list[Image.Image], texts: list[str]
) -> dict[str, torch.Tensor]:
    rgb = [image.convert("RGB") for image in images]
    return model.processor(
        images=rgb, text=texts, padding=True, truncation=True, max_length=35, return_tensors="pt"
    )


def test_itc_similarities_equal_stock_forward_without_itm_head(
    retrieval, stock_retrieval_model, images, texts
) -> None:
    stock = _stock_inputs(retrieval, images, texts)
    with torch.no_grad():
        expected = stock_retrieval_model(**stock, use_itm_head=False).itm_score.numpy()
    ours = retrieval.embed_images(images).vectors @ retrieval.embed_texts(texts).T
    assert expected.shape == ours.shape == (len(images), len(texts))
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE)
    assert np.ptp(expected) > 0.1, "tiny model embeds everything alike: the comparison would be vacuous"


def test_itm_pairwise_equals_stock_forward_with_itm_head(
    retrieval, stock_retrieval_model, images, texts
) -> None:
    stock = _stock_inputs(retrieval, images, texts)
    with torch.no_grad():
        expected = stock_retrieval_model(**stock, use_itm_head=True).itm_score.softmax(dim=-1)[:, 1].numpy()
    ours = retrieval.itm_scores(texts, images)
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE)
    assert np.ptp(expected) > 1e-3


def test_itm_one_text_against_many_images(retrieval, stock_retrieval_model, images) -> None:
    query = "a red apple on a table"
    stock = _stock_inputs(retrieval, images, [query] * len(images))
    with torch.no_grad():
        expected = stock_retrieval_model(**stock).itm_score.softmax(dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(retrieval.itm_scores(query, images), expected, atol=TOLERANCE)


def test_itm_from_cached_vision_tokens_equals_from_images(retrieval, images, texts) -> None:
    tokens = retrieval.vision_tokens(images)
    assert tokens.shape[0] == len(images)
    np.testing.assert_allclose(
        retrieval.itm_scores(texts, vision_tokens=tokens), retrieval.itm_scores(texts, images), atol=TOLERANCE
    )
    embedded = retrieval.embed_images(images, return_vision_tokens=True)
    assert embedded.vision_tokens is not None
    torch.testing.assert_close(embedded.vision_tokens, tokens)


def test_image_vectors_are_unit_float32_with_embedding_dim(retrieval, images) -> None:
    vectors = retrieval.embed_images(images).vectors
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(images), retrieval.embedding_dim) == (len(images), 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors.flags.c_contiguous


def test_results_do_not_depend_on_batch_size(retrieval, images, texts) -> None:
    original = (retrieval.image_batch_size, retrieval.text_batch_size, retrieval.itm_batch_size)
    small_images = retrieval.embed_images(images).vectors
    small_texts = retrieval.embed_texts(texts)
    small_itm = retrieval.itm_scores(texts, images)
    try:
        retrieval.image_batch_size = retrieval.text_batch_size = retrieval.itm_batch_size = 64
        np.testing.assert_allclose(retrieval.embed_images(images).vectors, small_images, atol=TOLERANCE)
        np.testing.assert_allclose(retrieval.embed_texts(texts), small_texts, atol=TOLERANCE)
        np.testing.assert_allclose(retrieval.itm_scores(texts, images), small_itm, atol=TOLERANCE)
    finally:
        retrieval.image_batch_size, retrieval.text_batch_size, retrieval.itm_batch_size = original


def test_texts_batched_by_length_come_back_in_the_callers_order(retrieval) -> None:
    texts = [
        "a long description of a red leather handbag with a golden buckle and two straps",
        "cat",
        "a small blue bird sitting on a branch",
        "dog",
        "an apple",
    ]
    alone = np.stack([retrieval.embed_texts([text])[0] for text in texts])
    original = retrieval.text_batch_size
    try:
        retrieval.text_batch_size = 2  # batches mix lengths differently from the input order
        together = retrieval.embed_texts(texts)
    finally:
        retrieval.text_batch_size = original
    np.testing.assert_allclose(together, alone, atol=TOLERANCE)
    assert not np.allclose(together[1], together[3], atol=TOLERANCE)  # distinct texts, distinct rows


def test_text_is_embedded_at_its_own_length(retrieval) -> None:
    encoded = retrieval.tokenize(["cat", "a dog"])
    assert encoded["input_ids"].shape[1] == 4  # [CLS] a dog [SEP], not padded to 35


def test_long_text_is_truncated_to_blip_limit(retrieval) -> None:
    long_text = " ".join(["red apple"] * 40)
    ids = retrieval.tokenize([long_text])["input_ids"]
    assert ids.shape[1] == 35
    assert int(ids[0, -1]) == retrieval.tokenizer.sep_token_id
    truncated_words = retrieval.tokenizer.decode(ids[0], skip_special_tokens=True)
    np.testing.assert_allclose(
        retrieval.embed_texts([long_text]), retrieval.embed_texts([truncated_words]), atol=TOLERANCE
    )
    assert not np.allclose(
        retrieval.embed_texts([long_text]), retrieval.embed_texts(["red apple"]), atol=1e-3
    )


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_is_rejected_clearly(retrieval, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        retrieval.embed_texts(["fine", bad])
    with pytest.raises(InvalidInputError, match="empty"):
        retrieval.itm_scores(bad, vision_tokens=retrieval.vision_tokens([Image.new("RGB", (8, 8))]))


def test_single_string_instead_of_list_is_rejected(retrieval) -> None:
    with pytest.raises(InvalidInputError, match="list"):
        retrieval.embed_texts("a cat")  # type: ignore[arg-type]


def test_pairwise_itm_needs_one_text_per_image(retrieval, images) -> None:
    with pytest.raises(InvalidInputError, match="one text per image"):
        retrieval.itm_scores(["a", "b"], images)


def test_empty_batches_give_empty_results(retrieval) -> None:
    assert retrieval.embed_images([]).vectors.shape == (0, 256)
    assert retrieval.embed_texts([]).shape == (0, 256)


def test_pixel_values_are_accepted_directly(retrieval, images) -> None:
    pixels = retrieval.pixel_values(images)
    assert pixels.shape == (len(images), 3, retrieval.image_size, retrieval.image_size)
    np.testing.assert_allclose(
        retrieval.embed_images(pixels).vectors, retrieval.embed_images(images).vectors, atol=TOLERANCE
    )
    with pytest.raises(InvalidInputError, match=r"\[N, 3, H, W\]"):
        retrieval.embed_images(torch.zeros(2, 32, 32))


def test_bfloat16_path_agrees_with_float32(tiny_checkpoints, cpu_settings, images, texts) -> None:
    """The reduced-precision path CUDA uses by default, exercised on CPU: same ranking, close scores."""
    low = RetrievalModel.load(
        str(tiny_checkpoints.retrieval), cpu_settings.model_copy(update={"dtype": "bfloat16"})
    )
    full = RetrievalModel.load(str(tiny_checkpoints.retrieval), cpu_settings)
    assert low.dtype == torch.bfloat16
    assert low.fingerprint == full.fingerprint
    sim_low = low.embed_images(images).vectors @ low.embed_texts(texts).T
    sim_full = full.embed_images(images).vectors @ full.embed_texts(texts).T
    assert np.abs(sim_low - sim_full).max() < 0.05
    assert (sim_low.argmax(axis=0) == sim_full.argmax(axis=0)).mean() >= 0.7
