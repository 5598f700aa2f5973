"""Embeddings as stored bytes: both precisions read back as float32, a short blob is a corrupt row."""

from __future__ import annotations

import numpy as np
import pytest

from blipsearch.errors import CatalogError
from blipsearch.storage.vector_codec import decode_vectors, encode_vector, round_trip

from catalog_rows import unit_vector


def test_vectors_round_trip_in_both_storage_precisions() -> None:
    vector = unit_vector(1, 256)
    assert np.array_equal(decode_vectors([encode_vector(vector, "float32")], "float32", 256)[0], vector)
    half = decode_vectors([encode_vector(vector, "float16")], "float16", 256)[0]
    assert np.array_equal(half, round_trip(vector[None, :], "float16")[0])
    assert np.abs(half - vector).max() < 1e-3
    with pytest.raises(CatalogError, match="does not have 256"):
        decode_vectors([b"\x00" * 12], "float32", 256)


def test_no_blobs_decode_to_an_empty_matrix_of_the_right_width() -> None:
    assert decode_vectors([], "float16", 12).shape == (0, 12)
