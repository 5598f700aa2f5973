"""The automatic index-kind rule, and the spec a generation's manifest stores."""

from __future__ import annotations

import pytest

from blipsearch.storage.index_spec import EXACT_LIMIT, IndexSpec, choose_index_spec, estimated_bytes


def test_automatic_rule_follows_size_and_budget() -> None:
    assert choose_index_spec(10, 256, memory_budget_bytes=1 << 30).kind == "flat"
    assert choose_index_spec(EXACT_LIMIT - 1, 256, memory_budget_bytes=1 << 30).kind == "flat"
    big = 2_000_000
    roomy = estimated_bytes("hnsw", big, 256)
    assert choose_index_spec(big, 256, memory_budget_bytes=roomy).kind == "hnsw"
    assert choose_index_spec(big, 256, memory_budget_bytes=roomy - 1).kind == "ivf"
    tight = choose_index_spec(big, 256, memory_budget_bytes=estimated_bytes("ivf", big, 256) - 1)
    assert tight.kind == "ivfpq" and 256 % tight.pq_m == 0 and tight.pq_bits == 8
    assert tight.nlist * 39 <= big
    # An explicit trained kind with too little to train on waits as exact search.
    assert choose_index_spec(3, 256, memory_budget_bytes=1, requested="ivfpq").kind == "flat"
    assert choose_index_spec(3, 256, memory_budget_bytes=1, requested="hnsw").kind == "hnsw"


def test_spec_survives_its_manifest_form_and_refuses_unknown_kinds() -> None:
    spec = choose_index_spec(100_000, 64, memory_budget_bytes=1, requested="ivfpq")
    assert IndexSpec.from_dict(spec.to_dict()) == spec
    assert IndexSpec.from_dict({**spec.to_dict(), "unknown_field": 1}) == spec
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexSpec.from_dict({"kind": "annoy", "dim": 64})
