"""`blipsearch eval`: rank arithmetic by hand, the annotation loaders, the model run and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from blipsearch.search.evaluation import (
    CaptionSet,
    evaluate,
    image_to_text_ranks,
    load_caption_set,
    recall_at,
    rerank_matrix,
    shortlist,
    summarize_ranks,
    text_to_image_ranks,
)
from imagesets import write_valid_images

from blipsearch.errors import InvalidInputError
from blipsearch.images import open_image
from blipsearch.models.retrieval import RetrievalModel

# --------------------------------------------------------------------------------------------
# Metrics on a matrix small enough to rank by hand

# Texts t0,t1 describe image 0, t2,t3 image 1, t4,t5 image 2.
HAND_OWNER = np.array([0, 0, 1, 1, 2, 2])
HAND_SIMS = np.array(
    [
        #  t0   t1   t2   t3   t4   t5
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],  # image 0
        [0.5, 0.6, 0.4, 0.1, 0.2, 0.3],  # image 1
        [0.2, 0.3, 0.1, 0.9, 0.6, 0.5],  # image 2
    ]
)
# image->text, each row sorted by descending score:
#   image 0: t0 .9, t2 .8, t5 .4, t4 .3, t3 .2, t1 .1  -> own t0 at 1, t1 at 6   -> best 1
#   image 1: t1 .6, t0 .5, t2 .4, t5 .3, t4 .2, t3 .1  -> own t2 at 3, t3 at 6   -> best 3
#   image 2: t3 .9, t4 .6, t5 .5, t1 .3, t0 .2, t2 .1  -> own t4 at 2, t5 at 3   -> best 2
HAND_I2T_RANKS = [1, 3, 2]
# text->image, each column against its own image:
#   t0 [.9 .5 .2] img0 -> 1    t1 [.1 .6 .3] img0 -> 3    t2 [.8 .4 .1] img1 -> 2
#   t3 [.2 .1 .9] img1 -> 3    t4 [.3 .2 .6] img2 -> 1    t5 [.4 .3 .5] img2 -> 1
HAND_T2I_RANKS = [1, 3, 2, 3, 1, 1]


def test_ranks_of_a_hand_computed_case() -> None:
    assert image_to_text_ranks(HAND_SIMS, HAND_OWNER).tolist() == HAND_I2T_RANKS
    assert text_to_image_ranks(HAND_SIMS, HAND_OWNER).tolist() == HAND_T2I_RANKS


def test_recalls_and_rank_summaries_of_the_hand_case() -> None:
    i2t = summarize_ranks(np.array(HAND_I2T_RANKS))
    assert (i2t.r1, i2t.r5, i2t.r10) == pytest.approx((100 / 3, 100.0, 100.0))
    assert (i2t.mean_rank, i2t.median_rank) == (2.0, 2.0)
    t2i = summarize_ranks(np.array(HAND_T2I_RANKS))
    assert (t2i.r1, t2i.r5, t2i.r10) == (50.0, 100.0, 100.0)
    assert t2i.mean_rank == pytest.approx(11 / 6) and t2i.median_rank == 1.5  # sorted 1 1 1 | 2 3 3
    assert recall_at(np.array(HAND_T2I_RANKS), 2) == pytest.approx(100 * 4 / 6)
    assert i2t.recall_mean == pytest.approx((100 / 3 + 200) / 3)


def test_ties_rank_the_lower_index_first() -> None:
    flat = np.zeros((3, 6))
    # Every score equal: texts in index order, so image 1's best own text (t2) is third.
    assert image_to_text_ranks(flat, HAND_OWNER).tolist() == [1, 3, 5]
    assert text_to_image_ranks(flat, HAND_OWNER).tolist() == [1, 1, 2, 2, 3, 3]
    tied = HAND_SIMS.copy()
    tied[1, 1] = tied[1, 2] = 0.6  # t1 and t2 tie at the top of image 1's row
    assert image_to_text_ranks(tied, HAND_OWNER).tolist() == [1, 2, 2]
    assert shortlist(tied, 3)[1].tolist() == [1, 2, 0]


def test_ranks_agree_with_a_stable_sort_on_random_ties() -> None:
    rng = np.random.default_rng(7)
    sims = rng.integers(0, 4, (9, 20)).astype(np.float32)  # many ties
    owner = np.repeat(np.arange(9), [3, 2, 2, 2, 3, 2, 2, 2, 2])
    order = np.argsort(-sims, axis=1, kind="stable")
    expected_i2t = [
        min(int(np.flatnonzero(order[i] == t)[0]) + 1 for t in np.flatnonzero(owner == i)) for i in range(9)
    ]
    column_order = np.argsort(-sims.T, axis=1, kind="stable")
    expected_t2i = [int(np.flatnonzero(column_order[t] == owner[t])[0]) + 1 for t in range(20)]
    assert image_to_text_ranks(sims, owner).tolist() == expected_i2t
    assert text_to_image_ranks(sims, owner).tolist() == expected_t2i
    assert np.array_equal(shortlist(sims, 5), order[:, :5])


def test_rerank_puts_the_shortlist_first_ordered_by_itm() -> None:
    itc = np.array([[0.1, 0.5, 0.3, 0.2, 0.45]], dtype=np.float32)
    candidates = shortlist(itc, 3)  # columns 1 (0.5), 4 (0.45) and 2 (0.3)
    assert candidates.tolist() == [[1, 4, 2]]
    scores = rerank_matrix(itc, candidates, np.array([[0.1, 0.6, 0.6]]))
    # ITM alone orders the shortlist: 4 and 2 tie at 0.6 and keep their ITC order (4 first),
    # then 1 (0.1); the rest keep ITC order below them.
    assert np.argsort(-scores[0], kind="stable").tolist() == [4, 2, 1, 3, 0]
    assert scores[0, 3] == pytest.approx(0.2) and scores[0, 0] == pytest.approx(0.1)


def test_rerank_with_an_itc_weight_adds_the_weighted_cosine_to_the_itm_log_odds() -> None:
    itc = np.array([[0.1, 0.5, 0.3, 0.2, 0.45]], dtype=np.float32)
    candidates = shortlist(itc, 3)  # 1 (0.5), 4 (0.45), 2 (0.3)
    itm = np.array([[0.5, 0.6, 0.55]])
    # log-odds 0, 0.405, 0.201; plus 10 x cosine: 5.0, 4.905, 3.201 -> 1 stays first
    by_sum = rerank_matrix(itc, candidates, itm, itc_weight=10.0)
    assert np.argsort(-by_sum[0], kind="stable").tolist() == [1, 4, 2, 3, 0]
    # with a small weight ITM decides: 4.905 - 4.5 = 0.405 + 0.45 beats 0 + 0.5
    by_itm = rerank_matrix(itc, candidates, itm, itc_weight=1.0)
    assert np.argsort(-by_itm[0], kind="stable").tolist() == [4, 2, 1, 3, 0]
    assert np.array_equal(rerank_matrix(itc, candidates, itm, 0.0), rerank_matrix(itc, candidates, itm))


def test_rerank_scores_are_the_probability_or_finite_log_odds_plus_cosine() -> None:
    from blipsearch.search.fusion import rerank_scores

    probability = np.array([0.0, 0.25, 1.0], dtype=np.float32)
    cosine = np.array([0.9, 0.1, -0.2])
    assert rerank_scores(probability, cosine, 0.0).tolist() == [0.0, 0.25, 1.0]
    fused = rerank_scores(probability, cosine, 2.0)
    assert np.all(np.isfinite(fused))
    assert fused[1] == pytest.approx(np.log(0.25 / 0.75) + 0.2)
    assert fused[0] < fused[1] < fused[2]  # a saturated head still orders, never NaN or inf
    with pytest.raises(ValueError, match="not negative"):
        rerank_scores(probability, cosine, -1.0)


@pytest.mark.parametrize(
    ("sims", "owner", "message"),
    [
        (np.zeros(6), HAND_OWNER, "n_images, n_texts"),
        (np.zeros((3, 6)), np.array([0, 0, 1]), "one entry per text"),
        (np.zeros((3, 6)), np.array([0, 0, 1, 1, 3, 3]), "outside the images"),
        (np.zeros((3, 6)), np.array([0, 0, 0, 1, 1, 1]), "at least one text"),
        (np.full((3, 6), np.nan), HAND_OWNER, "finite"),
    ],
)
def test_metric_inputs_are_checked(sims: np.ndarray, owner: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_to_text_ranks(sims, owner)


# --------------------------------------------------------------------------------------------
# Loaders


def test_blip_list_json(tmp_path: Path) -> None:
    path = tmp_path / "coco_karpathy_test.json"
    path.write_text(
        json.dumps(
            [
                {"image": "val2014/a.jpg", "caption": ["a dog", "  a   brown dog "]},
                {"image": "val2014/b.jpg", "caption": "a cat"},
            ]
        )
    )
    dataset = load_caption_set(path)
    assert dataset.images == (tmp_path / "val2014/a.jpg", tmp_path / "val2014/b.jpg")
    assert dataset.texts == ("a dog", "a brown dog", "a cat")
    assert dataset.text_to_image.tolist() == [0, 0, 1]
    elsewhere = load_caption_set(path, images_root=Path("/data/coco"))
    assert elsewhere.images[1] == Path("/data/coco/val2014/b.jpg")


def test_karpathy_dataset_json_picks_the_split(tmp_path: Path) -> None:
    path = tmp_path / "dataset_flickr30k.json"
    images = [
        {"filename": "1.jpg", "split": "train", "sentences": [{"raw": "train one"}]},
        {"filename": "2.jpg", "split": "test", "sentences": [{"raw": "test two"}, {"raw": "test 2"}]},
        {"filepath": "val2014", "filename": "3.jpg", "split": "test", "sentences": [{"raw": "test three"}]},
        {"filename": "4.jpg", "split": "val", "sentences": [{"raw": "val four"}]},
    ]
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    test = load_caption_set(path)
    assert test.images == (tmp_path / "2.jpg", tmp_path / "val2014" / "3.jpg")
    assert test.texts == ("test two", "test 2", "test three") and test.text_to_image.tolist() == [0, 0, 1]
    assert load_caption_set(path, split="val").texts == ("val four",)
    with pytest.raises(
        InvalidInputError, match=r"no image in split 'restval' \(splits in the file: test, train, val\)"
    ):
        load_caption_set(path, split="restval")


def test_tsv_with_repeated_images_header_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "set.tsv"
    path.write_text("image\tcaption\na.jpg\tfirst a\nsub/b.png\tonly b\n\na.jpg\tsecond a\twith a tab\n")
    dataset = load_caption_set(path)
    assert dataset.images == (tmp_path / "a.jpg", tmp_path / "sub" / "b.png")
    assert dataset.texts == ("first a", "only b", "second a with a tab")
    assert dataset.text_to_image.tolist() == [0, 1, 0]
    limited = dataset.first_images(1)
    assert limited.images == (tmp_path / "a.jpg",) and limited.texts == ("first a", "second a with a tab")


def test_format_auto_goes_by_content_for_other_suffixes(tmp_path: Path) -> None:
    as_json = tmp_path / "captions.annotations"
    as_json.write_text('[{"image": "x.jpg", "caption": "json"}]')
    as_tsv = tmp_path / "captions.list"
    as_tsv.write_text("x.jpg\ttsv\n")
    assert load_caption_set(as_json).texts == ("json",)
    assert load_caption_set(as_tsv).texts == ("tsv",)
    with pytest.raises(InvalidInputError, match="line 1: no tab"):
        load_caption_set(as_json, fmt="tsv")


@pytest.mark.parametrize(
    ("name", "content", "fmt", "message"),
    [
        ("missing.json", None, "auto", "Annotation file not found"),
        ("bad.json", '[{"image": "a.jpg",\n "caption": }]', "auto", r"not valid JSON \(line 2, column 13"),
        ("empty.json", "[]", "auto", "no image with a caption"),
        ("empty.tsv", "\n\n", "auto", "no image with a caption"),
        ("notab.tsv", "a.jpg\tfine\nb.jpg no tab here\n", "auto", r"notab.tsv, line 2: no tab"),
        ("nocaption.tsv", "a.jpg\tfine\n\nb.jpg\t  \n", "auto", r"line 3: the caption is empty"),
        ("noimage.tsv", "\tcaption\n", "auto", r"line 1: the image path is empty"),
        ("noimage.json", '[{"caption": "x"}]', "auto", r"entry #1 has no 'image'"),
        ("nocaption.json", '[{"image": "a.jpg", "caption": []}]', "auto", r"entry #1 has no 'caption'"),
        ("badcaption.json", '[{"image": "a.jpg", "caption": ["ok", 3]}]', "auto", "non-string caption"),
        ("scalar.json", "[1]", "auto", r"entry #1 is not an object \(got int\)"),
        ("object.json", '{"annotations": []}', "auto", "expected a list"),
        ("nosentences.json", '{"images": [{"filename": "a", "split": "test"}]}', "auto", "no 'sentences'"),
        ("latin1.tsv", b"a.jpg\tcaf\xe9\n", "auto", "not UTF-8"),
        ("any.tsv", "a.jpg\tx\n", "csv", "Unknown annotation format"),
    ],
)
def test_loader_errors_are_one_line(
    tmp_path: Path, name: str, content: str | bytes | None, fmt: str, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInputError, match=message) as caught:
        load_caption_set(path, fmt=fmt)
    assert "\n" not in str(caught.value)


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
    for text in ("5 images, 10 texts", "R@1", "median rank", "image->text", "text->image", "ITM@2", "ITM@3"):
        assert text in table.stdout
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
