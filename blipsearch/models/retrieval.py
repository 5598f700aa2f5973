"""The retrieval side of BLIP: ITC embeddings for indexing and queries, ITM scores for re-ranking.

The stock `BlipForImageTextRetrieval.forward` always runs the vision encoder next to the text
encoder; search needs the halves apart (images are embedded once at index time, queries at search
time, and ITM re-uses vision tokens computed earlier), so this class calls the same sub-modules the
stock forward calls, in the same order. Tests prove the results equal the stock forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BlipForImageTextRetrieval

from blipsearch.errors import ConfigError, InvalidInputError
from blipsearch.models.fast import accelerate, use_sdpa
from blipsearch.models.loading import LoadedCheckpoint, load_configured, preprocess_images
from blipsearch.models.onnx_backend import GraphBackend, open_backend
from blipsearch.models.onnx_graphs import OPSET
from blipsearch.models.runtime import chunks
from blipsearch.settings import BLIP_MAX_TEXT_TOKENS, Settings
from blipsearch.text_input import refuse_nul

ImageBatch = Sequence[Image.Image] | torch.Tensor
"""PIL images (any size, converted to RGB) or already preprocessed `pixel_values` [N, 3, H, W]."""


@dataclass(frozen=True)
class ImageEmbeddings:
    """ITC vectors plus, when asked for, the vision tokens that ITM cross-attends to."""

    vectors: np.ndarray
    vision_tokens: torch.Tensor | None = None


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Reject what BLIP cannot embed meaningfully instead of returning a vector for nothing."""
    if isinstance(texts, str):
        raise InvalidInputError("Expected a list of texts, got a single string.")
    cleaned: list[str] = []
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"Text #{position} is a {type(text).__name__}, not a string.")
        refuse_nul(text, f"Text #{position}")
        stripped = " ".join(text.split())
        if not stripped:
            raise InvalidInputError(f"Text #{position} is empty; a query needs at least one word.")
        cleaned.append(stripped)
    return cleaned


CPU_BATCH_ONE_ACTIVATIONS = 100_000
"""Vision tokens x width above which one image alone already fills a CPU's GEMMs (BLIP-base: 443k)."""


def default_image_batch_size(
    device: torch.device, vision_config: Any | None = None, dtype: torch.dtype = torch.float32
) -> int:
    """As measured (bench/results/): on CPU, ViT-B/16 at 384 px in fp32 or int8 costs least per
    image one at a time (batching only adds memory traffic), in bf16 batches of 8 are faster, and
    a small ViT such as the demo model's gains from batches; accelerators need batches to fill up."""
    if device.type != "cpu":
        return 32
    if dtype == torch.bfloat16:
        return 8
    if vision_config is None:
        return 1
    tokens = (int(vision_config.image_size) // int(vision_config.patch_size)) ** 2 + 1
    return 1 if tokens * int(vision_config.hidden_size) >= CPU_BATCH_ONE_ACTIVATIONS else 32


class RetrievalModel:
    """ITC and ITM on one loaded `BlipForImageTextRetrieval` checkpoint."""

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        *,
        image_batch_size: int = 16,
        text_batch_size: int = 64,
        itm_batch_size: int = 32,
        max_text_tokens: int = BLIP_MAX_TEXT_TOKENS,
        precision: str | None = None,
        backend: GraphBackend | None = None,
    ) -> None:
        if not isinstance(checkpoint.model, BlipForImageTextRetrieval):
            raise TypeError("RetrievalModel needs a BlipForImageTextRetrieval checkpoint")
        self.checkpoint = checkpoint
        self.model: BlipForImageTextRetrieval = checkpoint.model
        self.processor = checkpoint.processor
        self.tokenizer = checkpoint.processor.tokenizer
        self.image_processor = checkpoint.processor.image_processor
        self.image_batch_size = image_batch_size
        self.text_batch_size = text_batch_size
        self.itm_batch_size = itm_batch_size
        self.max_text_tokens = max_text_tokens
        self.precision = precision or str(checkpoint.dtype).removeprefix("torch.")
        """What the weights compute in: float32, bfloat16, float16, or int8 (dynamic quantisation)."""
        self.backend = backend
        """ONNX Runtime or OpenVINO for the graphs in `backend.graphs` (`inference_runtime`)."""

    @classmethod
    def load(cls, source: str, settings: Settings | None = None) -> RetrievalModel:
        settings = settings or Settings()
        checkpoint = load_configured(BlipForImageTextRetrieval, source, "retrieval", settings)
        backend = _backend(checkpoint, settings)
        precision = accelerate(
            checkpoint.model,
            checkpoint.device,
            checkpoint.dtype,
            attention=settings.attention,
            quantize=settings.quantize,
        )
        return cls(
            checkpoint,
            image_batch_size=settings.image_batch_size
            or default_image_batch_size(
                checkpoint.device, checkpoint.model.config.vision_config, checkpoint.dtype
            ),
            text_batch_size=settings.text_batch_size,
            itm_batch_size=settings.itm_batch_size,
            max_text_tokens=settings.max_text_tokens,
            precision=precision,
            backend=backend,
        )

    def _uses(self, graph: str) -> bool:
        return self.backend is not None and graph in self.backend.graphs

    @property
    def fingerprint(self) -> str:
        return self.checkpoint.fingerprint

    @property
    def device(self) -> torch.device:
        return self.checkpoint.device

    @property
    def dtype(self) -> torch.dtype:
        return self.checkpoint.dtype

    @property
    def _vision_config(self) -> Any:
        return self.model.config.vision_config

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.image_text_hidden_size)

    @property
    def image_size(self) -> int:
        return int(self._vision_config.image_size)

    def pixel_values(self, images: ImageBatch) -> torch.Tensor:
        """Resize and normalise exactly as the checkpoint's own processor does."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise InvalidInputError(f"pixel_values must be [N, 3, H, W], got {tuple(images.shape)}.")
            return images
        if len(images) == 0:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return preprocess_images(self.processor, images)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad to the longest text in the batch (not to 35): short queries stay cheap."""
        encoded = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {k: v.to(self.device) for k, v in encoded.items()}

    @torch.inference_mode()
    def embed_images(self, images: ImageBatch, *, return_vision_tokens: bool = False) -> ImageEmbeddings:
        """L2-normalised ITC image vectors, float32 [N, D]; optionally the vision tokens for ITM."""
        pixels = self.pixel_values(images)
        vectors: list[torch.Tensor] = []
        tokens: list[torch.Tensor] = []
        for start in range(0, pixels.shape[0], self.image_batch_size):
            batch = pixels[start : start + self.image_batch_size].to(self.device, self.dtype)
            if self._uses("vision"):
                assert self.backend is not None
                found, states = self.backend.vision(batch.float().numpy())
                vectors.append(torch.from_numpy(found))
                hidden = torch.from_numpy(states).to(self.dtype)
            else:
                hidden = self.model.vision_model(pixel_values=batch).last_hidden_state
                projected = self.model.vision_proj(hidden[:, 0, :])
                vectors.append(F.normalize(projected.float(), dim=-1).cpu())
            if return_vision_tokens:
                tokens.append(hidden)
        array = torch.cat(vectors).numpy() if vectors else np.zeros((0, self.embedding_dim), dtype=np.float32)
        vision = torch.cat(tokens) if return_vision_tokens and tokens else None
        return ImageEmbeddings(vectors=np.ascontiguousarray(array, dtype=np.float32), vision_tokens=vision)

    @torch.inference_mode()
    def vision_tokens(self, images: ImageBatch) -> torch.Tensor:
        """The vision encoder's last hidden state [N, T, H], on the model device and dtype."""
        result = self.embed_images(images, return_vision_tokens=True)
        assert result.vision_tokens is not None or len(result.vectors) == 0
        if result.vision_tokens is None:
            hidden = int(self._vision_config.hidden_size)
            return torch.empty(0, 0, hidden, device=self.device, dtype=self.dtype)
        return result.vision_tokens

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised ITC text vectors, float32 [N, D]; texts longer than BLIP's limit are truncated.

        Batches are cut from the texts ordered by length, so a batch pads to texts of about its own
        length: a catalog mixes three-word titles with long descriptions, and padding every title to
        the longest description in its batch spent most of indexing's text time on padding.
        """
        cleaned = validate_texts(texts)
        if not cleaned:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        order = sorted(range(len(cleaned)), key=lambda i: len(cleaned[i]))
        vectors = torch.empty(len(cleaned), self.embedding_dim)
        for positions in chunks(order, self.text_batch_size):
            encoded = self.tokenize([cleaned[i] for i in positions])
            if self._uses("text"):
                assert self.backend is not None
                found = self.backend.text(encoded["input_ids"].numpy(), encoded["attention_mask"].numpy())
                vectors[list(positions)] = torch.from_numpy(found)
                continue
            hidden = self.model.text_encoder(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
            ).last_hidden_state
            projected = self.model.text_proj(hidden[:, 0, :])
            vectors[list(positions)] = F.normalize(projected.float(), dim=-1).cpu()
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)

    @torch.inference_mode()
    def itm_scores(
        self,
        texts: str | Sequence[str],
        images: ImageBatch | None = None,
        *,
        vision_tokens: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Match probabilities (softmax of the ITM head, class 1), float32 [N].

        `texts` is either one text scored against every image (a query against its shortlist) or
        one text per image (pairwise). Pass `vision_tokens` from `vision_tokens()` or a cache to
        skip the vision encoder.
        """
        if (images is None) == (vision_tokens is None):
            raise ValueError("pass exactly one of images or vision_tokens")
        vision = vision_tokens if vision_tokens is not None else self.vision_tokens(images)  # type: ignore[arg-type]
        count = int(vision.shape[0])
        one_query = isinstance(texts, str)
        text_list = validate_texts([texts] if isinstance(texts, str) else texts)
        if not one_query and len(text_list) != count:
            raise InvalidInputError(
                f"Pairwise ITM needs one text per image: got {len(text_list)} texts for {count} images."
            )
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        query = self.tokenize(text_list) if one_query else None
        scores: list[torch.Tensor] = []
        for start in range(0, count, self.itm_batch_size):
            stop = min(start + self.itm_batch_size, count)
            image_hidden = vision[start:stop].to(self.device, self.dtype)
            if query is not None:
                encoded = {k: v.expand(stop - start, -1) for k, v in query.items()}
            else:
                encoded = self.tokenize(text_list[start:stop])
            if self._uses("itm"):
                assert self.backend is not None
                found = self.backend.itm(
                    encoded["input_ids"].numpy(),
                    encoded["attention_mask"].numpy(),
                    image_hidden.float().numpy(),
                )
                scores.append(torch.from_numpy(found))
                continue
            image_mask = torch.ones(image_hidden.shape[:-1], dtype=torch.long, device=self.device)
            hidden = self.model.text_encoder(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                encoder_hidden_states=image_hidden,
                encoder_attention_mask=image_mask,
            ).last_hidden_state
            logits = self.model.itm_head(hidden[:, 0, :])
            scores.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu())
        return torch.cat(scores).numpy().astype(np.float32, copy=False)


def _backend(checkpoint: LoadedCheckpoint, settings: Settings) -> GraphBackend | None:
    """The configured runtime's sessions, exported from the float32 model before any int8
    quantisation; torch keeps the graphs the runtime was not measured faster on."""
    runtime = settings.inference_runtime
    if runtime == "torch":
        return None
    if checkpoint.device.type != "cpu" or checkpoint.dtype != torch.float32:
        raise ConfigError(
            f"inference_runtime={runtime} runs float32 graphs on the CPU; this model runs on "
            f"{checkpoint.device.type} in {str(checkpoint.dtype).removeprefix('torch.')} "
            "(set device=cpu and dtype=float32, or inference_runtime=torch)."
        )
    if settings.attention == "sdpa":
        use_sdpa(checkpoint.model)
    key = f"{checkpoint.fingerprint}-{settings.attention}-opset{OPSET}"
    return open_backend(
        runtime, checkpoint.model, settings.data_dir / "onnx" / key, graphs=settings.inference_runtime_graphs
    )
