"""A vision-language captioner through Hugging Face ``transformers``, from a local model folder.

``HFCaptioner(model_path)`` loads ``AutoProcessor`` and the image-text-to-text auto class
(``AutoModelForImageTextToText``; ``AutoModelForVision2Seq`` on older ``transformers``) with
``local_files_only=True``: it never downloads. Folders of Qwen2-VL, SmolVLM / Idefics3, LLaVA-style and
BLIP-style models work (any model those auto classes know).

Per clip, ``num_frames`` frames are sampled uniformly (:func:`sample_frame_indices`). How they reach the
model:
- a processor with a chat template (Qwen2-VL, SmolVLM, LLaVA): one user turn with ``num_frames`` image items
  followed by the instruction, rendered by the processor's own template (``frames="images"``);
- a processor without one (BLIP): the frames tiled into one image, row by row in time order, with the
  instruction as a plain text prompt (``frames="grid"``). BLIP-style models continue a prefix rather than
  follow an instruction: give them one such as ``instruction="a video of"``.

Decoding is greedy (deterministic), batched ``batch_size`` clips at a time (left padding), in bf16 on CUDA and
fp32 on CPU by default. The instruction is removed from the answer (the prompt tokens of a decoder-only model,
or the prompt text a BLIP-style model repeats); an answer that is empty after that raises
:class:`~recaption.base.CaptionError`, so the batch job keeps the clip's original caption and counts it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from recaption.base import Caption, Captioner, CaptionError, CaptionInput

DEFAULT_INSTRUCTION = (
    "Describe this video in one detailed sentence: the objects (colour, shape, size), where they are "
    "(left, right, top, bottom), how they move, what they hit, and what can be heard."
)
_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_PROCESSOR = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
FRAME_MODES = ("auto", "images", "grid")


def sample_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread uniformly over ``num_available`` frames: the centre of each of
    ``num_frames`` equal segments (``floor((i + 0.5) * T / n)``). A clip with fewer frames gives all of
    them, once each, in order (no frame is repeated to pad)."""
    if num_available < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_available}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_available <= num_frames:
        return list(range(num_available))
    return [int((i + 0.5) * num_available / num_frames) for i in range(num_frames)]


def frame_grid(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) frames tiled into one (rows*H, cols*W, 3) image, row by row in time order; a grid as
    square as possible (cols = ceil(sqrt(T))), empty cells black."""
    t = frames.shape[0]
    cols = math.ceil(math.sqrt(t))
    rows = math.ceil(t / cols)
    pad = np.zeros((rows * cols - t, *frames.shape[1:]), dtype=frames.dtype)
    cells = np.concatenate([frames, pad])
    return rearrange(cells, "(r c) h w ch -> (r h) (c w) ch", r=rows, c=cols)


def check_model_folder(path: str | Path) -> Path:
    """The folder as a ``Path`` when it holds a model config, weights, a processor and a tokenizer;
    otherwise a ``ValueError`` naming the folder and what is missing (also the shards a sharded
    checkpoint's index lists but the folder lacks: an interrupted download)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"HF captioner model folder {str(folder)!r} does not exist (or is not a folder); give a local "
            "folder with config.json, the weights, the processor and tokenizer files (nothing is downloaded)"
        )
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        missing.append(f"weights (one of {', '.join(_WEIGHTS)})")
    if not any((folder / name).is_file() for name in _PROCESSOR):
        missing.append(f"processor config (one of {', '.join(_PROCESSOR)})")
    if not any((folder / name).is_file() for name in _TOKENIZER):
        missing.append(f"tokenizer files (one of {', '.join(_TOKENIZER)})")
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = set(json.loads((folder / index).read_text()).get("weight_map", {}).values())
            missing += [
                f"weight shard {s} (listed in {index})" for s in sorted(shards) if not (folder / s).is_file()
            ]
    if missing:
        raise ValueError(
            f"HF captioner model folder {str(folder)!r} is incomplete: missing {'; '.join(missing)}"
        )
    return folder


def _resolve(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return dev, _DTYPES[dtype]


def _load(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """(processor, model) from ``folder``, offline; a folder the auto classes cannot read -> ValueError."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    auto = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
    try:
        processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
        try:
            model = auto.from_pretrained(folder, local_files_only=True, **{dtype_kw: dtype})
        except ValueError:
            if (
                not hasattr(transformers, "AutoModelForVision2Seq")
                or auto is transformers.AutoModelForVision2Seq
            ):
                raise
            model = transformers.AutoModelForVision2Seq.from_pretrained(
                folder, local_files_only=True, **{dtype_kw: dtype}
            )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"could not load a vision-language model and processor from {str(folder)!r} "
            f"(local_files_only=True): {type(err).__name__}: {err}"
        ) from err
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ValueError(
            f"{str(folder)!r} holds a {type(processor).__name__}, not a vision-language processor "
            "(one with an image processor and a tokenizer)"
        )
    return processor, model


class HFCaptioner(Captioner):
    """Captions clips with a Hugging Face vision-language model from a local folder (see the module doc).

    Args:
        model_path: a local folder (config.json, weights, processor and tokenizer files).
        instruction: what the model is asked (a chat turn, or the plain prompt without a chat template).
        num_frames: frames sampled uniformly per clip.
        batch_size: clips per ``generate`` call.
        max_new_tokens: the longest answer, in tokens.
        dtype: "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp16" or "fp32".
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        frames: "auto" (images with a chat template, else a grid), "images" or "grid".
    """

    name = "hf"
    version = "1"

    def __init__(
        self,
        model_path: str,
        instruction: str = DEFAULT_INSTRUCTION,
        num_frames: int = 8,
        batch_size: int = 4,
        max_new_tokens: int = 64,
        dtype: str = "auto",
        device: str = "auto",
        frames: str = "auto",
    ) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        for key, value in (
            ("num_frames", num_frames),
            ("batch_size", batch_size),
            ("max_new_tokens", max_new_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if frames not in FRAME_MODES:
            raise ValueError(f"frames must be one of {FRAME_MODES}, got {frames!r}")
        self.model_path = check_model_folder(model_path)
        self.instruction, self.num_frames = instruction, num_frames
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.device, self.dtype = _resolve(device, dtype)
        self.processor, self.model = _load(self.model_path, self.dtype)
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        gen = getattr(self.model, "generation_config", None)
        if gen is not None and gen.pad_token_id is None:
            gen.pad_token_id = self.tokenizer.pad_token_id
        has_template = bool(getattr(self.processor, "chat_template", None))
        self.frames = frames if frames != "auto" else ("images" if has_template else "grid")
        if self.frames == "images" and not has_template:
            raise ValueError(
                f"frames='images' needs a processor with a chat template; {str(self.model_path)!r} has none "
                "(use frames='grid')"
            )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "model": str(self.model_path),
            "model_class": type(self.model).__name__,
            "instruction": self.instruction,
            "num_frames": self.num_frames,
            "frames": self.frames,
            "max_new_tokens": self.max_new_tokens,
        }

    # ---- prompts and images ------------------------------------------------------------------------------
    def _prompt(self, num_images: int) -> str:
        if self.frames == "grid":
            return self.instruction
        content = [{"type": "image"} for _ in range(num_images)] + [
            {"type": "text", "text": self.instruction}
        ]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _images(self, clip: CaptionInput) -> list:
        from PIL import Image

        frames = clip.frames[sample_frame_indices(clip.frames.shape[0], self.num_frames)]
        if self.frames == "grid":
            return [Image.fromarray(frame_grid(frames))]
        return [Image.fromarray(f) for f in frames]

    # ---- generation --------------------------------------------------------------------------------------
    def caption_batch(self, clips: list[CaptionInput]) -> list[Caption]:
        out: list[Caption] = []
        for start in range(0, len(clips), self.batch_size):
            out += self._caption_chunk(clips[start : start + self.batch_size])
        return out

    @torch.no_grad()
    def _caption_chunk(self, clips: list[CaptionInput]) -> list[Caption]:
        images = [self._images(c) for c in clips]
        texts = [self._prompt(len(imgs)) for imgs in images]
        flat = [img for imgs in images for img in imgs]
        enc = self.processor(text=texts, images=flat, return_tensors="pt", padding=True)
        enc = {
            k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in enc.items()
            if isinstance(v, torch.Tensor)
        }
        generated = self.model.generate(
            **enc,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        answers = self._answers(enc["input_ids"], generated)
        captions = []
        for clip, answer in zip(clips, answers, strict=True):
            if not answer:
                raise CaptionError(
                    f"clip {clip.key!r}: the model at {str(self.model_path)!r} gave an empty answer"
                )
            captions.append(Caption(text=answer))
        return captions

    def _answers(self, prompt_ids: torch.Tensor, generated: torch.Tensor) -> list[str]:
        """The new text of each row without the instruction: a decoder-only model's output starts with the
        prompt tokens (cut them); a BLIP-style one restarts from its own start token and repeats the
        prompt's text (cut that text)."""
        n = prompt_ids.shape[1]
        if generated.shape[1] >= n and torch.equal(generated[:, :n], prompt_ids):
            return [
                t.strip() for t in self.tokenizer.batch_decode(generated[:, n:], skip_special_tokens=True)
            ]
        prompts = self.tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        full = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        answers = []
        for prompt, text in zip(prompts, full, strict=True):
            prompt, text = " ".join(prompt.split()), " ".join(text.split())
            if prompt and text.lower().startswith(prompt.lower()):
                text = text[len(prompt) :]
            answers.append(text.strip())
        return answers
