#!/usr/bin/env bash
# Set up blipsearch in ./.venv and run the main job on this machine, offline.
#
# The main job: load the shipped demo model (demo/model: a small BLIP trained on emoji on a 2-core
# CPU; its README is the model card), check it on one picture (ITC, ITM, a caption), index the
# shipped emoji catalog (1,911 products with SKU, category, brand, price, tags) plus three broken
# files into the SQL catalog and FAISS, show the index status, verify it, re-run the indexer to
# show that nothing unchanged is embedded again, search it by text, SKU, filters and image, and
# serve it (web UI + API). Set BLIPSEARCH_RETRIEVAL_MODEL / _CAPTION_MODEL / _VQA_MODEL to real
# checkpoints (hub ids or directories) to run the same commands on real BLIP weights;
# BLIPSEARCH_QUICKSTART_PHOTOS=DIR indexes your own folder instead of the demo catalog.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: the CPU wheel; anything looser pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"  # tested versions (scripts/lock.sh)

work=${BLIPSEARCH_QUICKSTART_DIR:-.quickstart}
mkdir -p "$work"
bs=.venv/bin/blipsearch
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

if [ -z "${BLIPSEARCH_RETRIEVAL_MODEL:-}" ]; then
  export BLIPSEARCH_RETRIEVAL_MODEL=demo/model/retrieval
  export BLIPSEARCH_CAPTION_MODEL=demo/model/caption
  # how the demo model re-ranks: ITM with ITC, weighted by its ITC temperature (demo/model/README.md)
  read -r demo_rerank demo_weight < <($bs demo-assets rerank-settings)
  export BLIPSEARCH_RERANK=${BLIPSEARCH_RERANK:-$demo_rerank}
  export BLIPSEARCH_RERANK_ITC_WEIGHT=${BLIPSEARCH_RERANK_ITC_WEIGHT:-$demo_weight}
  export BLIPSEARCH_CAPTION_PROMPT=${BLIPSEARCH_CAPTION_PROMPT:-"a picture of"}   # as it was trained
  export BLIPSEARCH_CAPTION_MIN_TOKENS=${BLIPSEARCH_CAPTION_MIN_TOKENS:-1}  # short names, not sentences
  export BLIPSEARCH_IMAGE_BATCH_SIZE=${BLIPSEARCH_IMAGE_BATCH_SIZE:-64}  # 64 px images: batching pays
fi
picture=demo/catalog/images/google/1f34e.png            # a red apple, Noto style

$bs model info "$BLIPSEARCH_RETRIEVAL_MODEL"
$bs model match "$picture" "a red apple" "a green apple" "a bicycle" "a smiling cat"
$bs model caption "$picture"
if [ -n "${BLIPSEARCH_VQA_MODEL:-}" ]; then
  $bs model ask "$picture" "what colour is it?"
fi

export BLIPSEARCH_DATA_DIR=${BLIPSEARCH_DATA_DIR:-$work/data}
$bs demo-assets broken-files "$work"                 # three files that must fail with a reason
if [ -n "${BLIPSEARCH_QUICKSTART_PHOTOS:-}" ]; then
  $bs index "$BLIPSEARCH_QUICKSTART_PHOTOS" --no-progress
else
  $bs index demo/catalog/catalog.csv --no-progress  # the emoji catalog, with product metadata
fi
$bs index "$work/broken" --no-progress               # broken files: reported, nothing lost
$bs index status
$bs index verify
if [ -z "${BLIPSEARCH_QUICKSTART_PHOTOS:-}" ]; then
  $bs index demo/catalog/catalog.csv --no-progress  # again: nothing unchanged is embedded twice
fi
$bs search "a red apple" -k 3                        # text to images, hybrid (ITC + keywords)
BLIPSEARCH_RERANK=false $bs search "a red apple" -k 3 # the same without ITM re-ranking
$bs search "a happy kitten" -k 3 --mode vector       # words the catalog never uses
$bs search "NOTO-1F34E" --mode keyword -k 1          # a product code the image encoder cannot know
$bs search "animal" -f "price<=10" -f brand=Noto --no-rerank -k 3
$bs search --image "$picture" -k 3                   # image to images
$bs describe "$picture" -k 2                         # caption + closest catalog texts
echo "blipsearch is set up: run '.venv/bin/blipsearch --help' for every command."
if [ "${BLIPSEARCH_QUICKSTART_SERVE:-1}" = "1" ]; then
  export BLIPSEARCH_API_KEY=${BLIPSEARCH_API_KEY:-demo}
  echo "serving it at http://${BLIPSEARCH_HOST:-127.0.0.1}:${BLIPSEARCH_PORT:-8080}/ (web UI and API; upload key: $BLIPSEARCH_API_KEY; Ctrl-C stops)"
  exec $bs serve
fi
