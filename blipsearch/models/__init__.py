"""The BLIP model layer: loading, ITC/ITM, captions, VQA, fingerprints and tiny test checkpoints."""

from blipsearch.models.captioner import Captioner, CaptionOptions
from blipsearch.models.fingerprint import model_fingerprint
from blipsearch.models.loading import LoadedCheckpoint, load_checkpoint
from blipsearch.models.registry import ModelSet
from blipsearch.models.retrieval import ImageEmbeddings, RetrievalModel
from blipsearch.models.tiny import TinyCheckpoints, make_tiny
from blipsearch.models.vqa import VisualQA

__all__ = [
    "CaptionOptions",
    "Captioner",
    "ImageEmbeddings",
    "LoadedCheckpoint",
    "ModelSet",
    "RetrievalModel",
    "TinyCheckpoints",
    "VisualQA",
    "load_checkpoint",
    "make_tiny",
    "model_fingerprint",
]
