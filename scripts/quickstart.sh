#!/usr/bin/env bash
# Set up blipsearch in ./.venv and run the main job on this machine, offline.
#
# The main job today: write tiny BLIP checkpoints, check the model layer on one picture (ITC, ITM,
# a caption, a question), then index a generated photo collection plus a small product catalog
# (with a few broken files) into the SQL catalog and FAISS, show the index status, verify it,
# and re-run the indexer to show that nothing unchanged is embedded again, then search it by text,
# SKU, filters and image. Set
# BLIPSEARCH_RETRIEVAL_MODEL / _CAPTION_MODEL / _VQA_MODEL to real checkpoints (hub ids or
# directories) to run the same commands on real BLIP weights; BLIPSEARCH_QUICKSTART_PHOTOS=DIR
# indexes your own folder instead of the generated one.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: the CPU wheel; anything looser pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev]"

work=${BLIPSEARCH_QUICKSTART_DIR:-.quickstart}
mkdir -p "$work"
bs=.venv/bin/blipsearch
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

if [ -z "${BLIPSEARCH_RETRIEVAL_MODEL:-}" ]; then
  $bs model make-tiny "$work/models" --force
  export BLIPSEARCH_RETRIEVAL_MODEL="$work/models/retrieval"
  export BLIPSEARCH_CAPTION_MODEL="$work/models/caption"
  export BLIPSEARCH_VQA_MODEL="$work/models/vqa"
  echo "(using tiny random checkpoints: the plumbing is real, the answers are noise)"
fi

.venv/bin/python - "$work/picture.jpg" <<'PY'
import sys
from PIL import Image, ImageDraw
image = Image.new("RGB", (320, 240), (135, 190, 235))
draw = ImageDraw.Draw(image)
draw.rectangle((0, 170, 320, 240), fill=(60, 150, 60))
draw.ellipse((120, 90, 200, 170), fill=(220, 30, 30))
image.save(sys.argv[1], quality=90)
PY

$bs model info "$BLIPSEARCH_RETRIEVAL_MODEL"
$bs model match "$work/picture.jpg" "a red ball on the grass" "a dog on a sofa" "a city street at night"
$bs model caption "$work/picture.jpg"
if [ -n "${BLIPSEARCH_VQA_MODEL:-}" ]; then
  $bs model ask "$work/picture.jpg" "what colour is the ball?"
fi

# A collection: generated photos, a product manifest, and files that must fail cleanly.
photos=${BLIPSEARCH_QUICKSTART_PHOTOS:-$work/photos}
if [ -z "${BLIPSEARCH_QUICKSTART_PHOTOS:-}" ]; then
  .venv/bin/python -m blipsearch.demo "$photos"
fi
export BLIPSEARCH_DATA_DIR=${BLIPSEARCH_DATA_DIR:-$work/data}
$bs index "$photos" --no-progress                   # the folder, broken files included
if [ -f "$photos/catalog/products.csv" ]; then
  $bs index "$photos/catalog/products.csv" --no-progress   # the same images, now with product metadata
fi
$bs index status
$bs index verify
$bs index "$photos" --no-progress                   # again: nothing unchanged is embedded twice
$bs search "a red ball" -k 3                        # text to images, hybrid, ITM re-ranked
$bs search "SKU-BLU-BO" --mode keyword -k 1         # a product code the image encoder cannot know
$bs search "toys" -f "price<=15" -f tag=red --no-rerank -k 3
$bs search --image "$work/picture.jpg" -k 2         # image to images
$bs describe "$work/picture.jpg" -k 2               # caption + closest catalog texts
echo "blipsearch is set up: run '.venv/bin/blipsearch --help' for every command."
if [ "${BLIPSEARCH_QUICKSTART_SERVE:-1}" = "1" ]; then
  export BLIPSEARCH_API_KEY=${BLIPSEARCH_API_KEY:-demo}
  echo "serving it at http://${BLIPSEARCH_HOST:-127.0.0.1}:${BLIPSEARCH_PORT:-8080}/ (web UI and API; upload key: $BLIPSEARCH_API_KEY; Ctrl-C stops)"
  exec $bs serve
fi
