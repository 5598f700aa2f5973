#!/usr/bin/env bash
# Set up blipsearch in ./.venv and run the main job on this machine, offline.
#
# Today the main job is the BLIP model layer end to end: it writes tiny BLIP checkpoints, prints
# what they are, embeds and matches a picture against texts (ITC + ITM), captions it and answers
# a question about it. Set BLIPSEARCH_RETRIEVAL_MODEL / _CAPTION_MODEL / _VQA_MODEL to real
# checkpoints (hub ids or directories) to run the same commands on real BLIP weights.
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
echo "blipsearch is set up: run '.venv/bin/blipsearch --help' for every command."
