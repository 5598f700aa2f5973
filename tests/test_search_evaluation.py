"""`blipsearch eval`: the model run against ranking its vectors by hand, re-ranking, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.images import open_image
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.caption_sets import CaptionSet, load_caption_set
from blipsearch.search.evaluation import evaluate
from blipsearch.search.rank_metrics import image_to_text_ranks, text_to_image_ranks

from imagesets import write_valid_images

# --------------------------------------------------------------------------------------------
# The tiny retrieval model on generated pictures: 6 images x 2 captions


@pytest.fixture(scope="module")
def caption_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalset")
    lines = ["image\tcaption"]
    for index, path in enumerate(write_valid_images(root / "pictures", 6)):
        relative = path.relative_to(root)
        lines += [f"{relative}\tpicture number {index}", f"{relative}\tanother view of thing {index}"]
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")
    return root / "captions.tsv"


@pytest.fixture(scope="module")
def caption_set(caption_file: Path) -> CaptionSet:
    return load_caption_set(caption_file)


def _in_bounds(result_dict: dict) -> None:
    for mode in result_dict["results"]:
        for direction in ("image_to_text", "text_to_image"):
            metrics = mode[direction]
            assert all(0.0 <= metrics[key] <= 100.0 for key in ("r1", "r5", "r10"))
            assert metrics["r1"] <= metrics["r5"] <= metrics["r10"]
            assert metrics["median_rank"] >= 1.0 and metrics["mean_rank"] >= 1.0


def test_itc_evaluation_equals_ranking_the_model_vectors(
    retrieval: RetrievalModel, caption_set: CaptionSet
) -> None:
    calls: list[tuple[str, int, int]] = []
    result = evaluate(retrieval, caption_set, image_batch=4, progress=lambda *call: calls.append(call))
    assert (result.images, result.texts, result.reranked) == (6, 12, ())
    _in_bounds(result.as_dict())
    pictures = [open_image(p, max_bytes=10**7, max_pixels=10**7) for p in caption_set.images]
    sims = retrieval.embed_images(pictures).vectors @ retrieval.embed_texts(caption_set.texts).T
    assert (
        result.itc.image_to_text_ranks.tolist()
        == image_to_text_ranks(sims, caption_set.text_to_image).tolist()
    )
    assert (
        result.itc.text_to_image_ranks.tolist()
        == text_to_image_ranks(sims, caption_set.text_to_image).tolist()
    )
    assert ("images", 4, 6) in calls and ("images", 6, 6) in calls and ("texts", 12, 12) in calls
    assert json.loads(json.dumps(result.as_dict()))["results"][0]["mode"] == "ITC"


def _reference_rerank_ranks(
    retrieval: RetrievalModel, caption_set: CaptionSet, k: int, itc_weight: float = 0.0
) -> tuple[list[int], list[int]]:
    """The documented rule, pair by pair: top-k by ITC re-ordered by ITM (or by ITM log-odds plus
    `itc_weight` x cosine), the rest by ITC."""
    pictures = [open_image(p, max_bytes=10**7, max_pixels=10**7) for p in caption_set.images]
    itc = retrieval.embed_images(pictures).vectors @ retrieval.embed_texts(caption_set.texts).T
    itm = np.stack([retrieval.itm_scores(text, pictures) for text in caption_set.texts], axis=1)
    owner = caption_set.text_to_image

    def order(scores: np.ndarray, matches: np.ndarray) -> list[int]:
        by_itc = sorted(range(len(scores)), key=lambda j: (-scores[j], j))

        def key(j: int) -> float:
            if not itc_weight:
                return float(matches[j])
            p = min(max(float(matches[j]), 1e-7), 1 - 1e-7)
            return float(np.log(p / (1 - p)) + itc_weight * float(scores[j]))

        top = sorted(by_itc[:k], key=lambda j: -key(j))  # stable: ties keep ITC order
        return top + by_itc[k:]

    i2t = []
    for image in range(itc.shape[0]):
        ranked = order(itc[image], itm[image])
        i2t.append(min(ranked.index(t) + 1 for t in np.flatnonzero(owner == image)))
    t2i = [order(itc[:, text], itm[:, text]).index(owner[text]) + 1 for text in range(itc.shape[1])]
    return i2t, t2i


def test_rerank_matches_the_pairwise_reference_and_keeps_ranks_beyond_k(
    retrieval: RetrievalModel, caption_set: CaptionSet
) -> None:
    result = evaluate(retrieval, caption_set, rerank_k=[3, 12], image_batch=4)
    _in_bounds(result.as_dict())
    assert [mode.mode for mode in result.modes] == ["ITC", "ITM@3", "ITM@12"]
    itc, top3, everything = result.modes
    for k, mode in ((3, top3), (12, everything)):
        i2t, t2i = _reference_rerank_ranks(retrieval, caption_set, k)
        assert mode.image_to_text_ranks.tolist() == i2t
        assert mode.text_to_image_ranks.tolist() == t2i
    # Re-ranking only reorders inside the top 3: a rank beyond 3 is the ITC rank, one within stays within.
    for before, after in (
        (itc.image_to_text_ranks, top3.image_to_text_ranks),
        (itc.text_to_image_ranks, top3.text_to_image_ranks),
    ):
        assert np.array_equal(before > 3, after > 3)
        assert np.array_equal(before[before > 3], after[after > 3])
    for direction in ("image_to_text", "text_to_image"):
        assert getattr(top3, direction).r5 == getattr(itc, direction).r5
        assert getattr(top3, direction).r10 == getattr(itc, direction).r10
    # k = 3 scored alone equals k = 3 taken as a prefix of k = 12's shortlists.
    alone = evaluate(retrieval, caption_set, rerank_k=3, image_batch=5).reranked[0]
    assert np.array_equal(alone.image_to_text_ranks, top3.image_to_text_ranks)
    assert np.array_equal(alone.text_to_image_ranks, top3.text_to_image_ranks)


def test_both_rerank_rules_from_one_itm_pass_match_the_pairwise_reference(
    retrieval: RetrievalModel, caption_set: CaptionSet
) -> None:
    result = evaluate(retrieval, caption_set, rerank_k=3, image_batch=4, itc_weight=(0.0, 20.0))
    assert [mode.mode for mode in result.modes] == ["ITC", "ITM@3", "ITM+ITC@3"]
    assert [mode.as_dict()["itc_weight"] for mode in result.modes] == [None, 0.0, 20.0]
    for weight, mode in ((0.0, result.modes[1]), (20.0, result.modes[2])):
        i2t, t2i = _reference_rerank_ranks(retrieval, caption_set, 3, weight)
        assert mode.image_to_text_ranks.tolist() == i2t
        assert mode.text_to_image_ranks.tolist() == t2i
    with pytest.raises(InvalidInputError, match="ITC weight"):
        evaluate(retrieval, caption_set, rerank_k=3, itc_weight=(1.0, 2.0))


def test_missing_image_fails_before_any_model_work(retrieval: RetrievalModel, tmp_path: Path) -> None:
    path = tmp_path / "set.tsv"
    path.write_text("gone.jpg\ta caption\n")
    with pytest.raises(InvalidInputError, match=r"image not found: .*gone.jpg \(see --images\)"):
        evaluate(retrieval, load_caption_set(path))
    with pytest.raises(InvalidInputError, match="at least 1"):
        evaluate(retrieval, load_caption_set(path), rerank_k=0)


# --------------------------------------------------------------------------------------------
# The command line, run as a user runs it


def _blipsearch(*args: str, model: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_RETRIEVAL_MODEL": str(model),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", "eval", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_prints_a_table_and_json(tiny_checkpoints, caption_file: Path) -> None:
    table = _blipsearch(
        str(caption_file), "--rerank-k", "2,3", "--limit", "5", model=tiny_checkpoints.retrieval
    )
    assert table.returncode == 0, table.stderr
    # The title names the file: a long temporary path (a pytest-xdist worker's) wraps it onto two lines.
    words = " ".join(table.stdout.split())
    for text in ("5 images, 10 texts", "R@1", "median rank", "image->text", "text->image", "ITM@2", "ITM@3"):
        assert text in words
    assert table.stdout.count("ITC") >= 2
    as_json = _blipsearch(str(caption_file), "--rerank-k", "3", "--json", model=tiny_checkpoints.retrieval)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert (data["images"], data["texts"], data["model"]) == (6, 12, str(tiny_checkpoints.retrieval))
    assert [mode["mode"] for mode in data["results"]] == ["ITC", "ITM@3"]
    _in_bounds(data)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("a.jpg\tfine\nno tab\n", [], "line 2: no tab"),
        ("a.jpg\tfine\n", ["--rerank-k", "x"], "--rerank-k takes whole numbers"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(
    tiny_checkpoints, tmp_path: Path, content: str, extra: list[str], message: str
) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    result = _blipsearch(str(path), *extra, model=tiny_checkpoints.retrieval)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
