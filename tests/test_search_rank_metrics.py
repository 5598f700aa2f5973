"""Rank arithmetic by hand: ranks, recalls, ties, shortlists and the re-ranking rule."""

from __future__ import annotations

import numpy as np
import pytest

from blipsearch.search.rank_metrics import (
    image_to_text_ranks,
    recall_at,
    rerank_matrix,
    shortlist,
    summarize_ranks,
    text_to_image_ranks,
)

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
