"""Tiny randomly initialised Hugging Face model folders, built offline, for the recaption tests.

Each builder writes a folder that loads with ``AutoProcessor`` + ``AutoModelForImageTextToText`` and
``local_files_only=True``: a word-level tokenizer made from scratch (``tokenizers``), an image processor from
its class with tiny sizes, and a 1-2 layer model. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

WORDS = [
    "a", "the", "red", "blue", "green", "ball", "box", "falls", "bounces", "on", "left", "right", "and",
    "describe", "this", "video", "in", "one", "sentence", "what", "happens", "caption", "it", "is", "of",
]  # fmt: skip

INIT = 0.5  # large random weights: the tiny models' answers then depend clearly on the images

# A LLaVA-style chat template: every image item becomes the processor's image token.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ image_token }} "
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def word_tokenizer(specials: list[str], wrap: tuple[str, str] | None = None):
    """A ``PreTrainedTokenizerFast`` over :data:`WORDS` plus ``specials``; ``wrap=(first, last)`` adds those
    two tokens around every text (BERT's ``[CLS] ... [SEP]``, which BLIP expects)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    base = ["[PAD]", "[UNK]", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(base + specials + WORDS + ["USER", "ASSISTANT", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    if wrap is not None:
        first, last = wrap
        tok.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=specials,
    )
    return fast


def _save(model, processor, out: Path) -> Path:
    """Save a tiny model and its processor; its generation config never emits a special token (end of text
    included), so every answer of the random model is ``max_new_tokens`` real words, never empty."""
    special = sorted(set(processor.tokenizer.all_special_ids))
    for owner in (model, getattr(model, "text_decoder", None)):
        if owner is not None and getattr(owner, "generation_config", None) is not None:
            owner.generation_config.suppress_tokens = special
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava(out: Path, seed: int = 0) -> Path:
    """LLaVA: a tiny CLIP vision tower + a tiny Llama, 16x16 crops in 8x8 patches (4 image tokens)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = word_tokenizer(["<image>"])
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=8, projection_dim=16, initializer_factor=INIT,
    )  # fmt: skip
    text = LlamaConfig(initializer_range=INIT,
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, do_center_crop=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
        num_additional_image_tokens=1,
    )  # fmt: skip
    return _save(model, processor, out)


def build_blip(out: Path, seed: int = 0) -> Path:
    """BLIP captioning: a tiny ViT + a tiny BERT-style decoder; no chat template (plain text prompt)."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    tokenizer = word_tokenizer(["[CLS]", "[SEP]", "[DEC]"], wrap=("[CLS]", "[SEP]"))
    tokenizer.cls_token, tokenizer.sep_token = "[CLS]", "[SEP]"
    ids = tokenizer.convert_tokens_to_ids
    vision = BlipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=8, projection_dim=16, initializer_range=INIT,
    )  # fmt: skip
    text = BlipTextConfig(initializer_range=INIT,
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, encoder_hidden_size=16, max_position_embeddings=128, projection_dim=16,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=ids("[DEC]"), sep_token_id=ids("[SEP]"),
        eos_token_id=ids("[SEP]"),
    )  # fmt: skip
    config = BlipConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 16, "width": 16}), tokenizer=tokenizer
    )
    return _save(model, processor, out)


def build_idefics3(out: Path, seed: int = 0) -> Path:
    """Idefics3 (SmolVLM's architecture): a tiny SigLIP-style tower (32 px images, 8 px patches, pixel
    shuffle by 2: 4 tokens an image) + a tiny Llama; no image splitting."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    tokenizer = word_tokenizer(specials)
    ids = tokenizer.convert_tokens_to_ids
    config = Idefics3Config(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "initializer_range": INIT},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 16,
                     "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "max_position_embeddings": 512, "initializer_range": INIT,
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": ids("<end_of_utterance>")},
        image_token_id=ids("<image>"), scale_factor=2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", "<image>"),
    )  # fmt: skip
    return _save(model, processor, out)


VLM_BUILDERS = {"llava": build_llava, "blip": build_blip, "idefics3": build_idefics3}


@pytest.fixture(scope="session")
def vlm_folders(tmp_path_factory) -> dict[str, Path]:
    """One saved folder per tiny vision-language model: ``{"llava": ..., "blip": ..., "idefics3": ...}``."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("vlm")
    return {name: build(root / name) for name, build in VLM_BUILDERS.items()}


def build_causal_lm(out: Path, seed: int = 0) -> Path:
    """A 1-layer Llama over the word tokenizer (the LM prompt upsampler's tests)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = word_tokenizer([])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, initializer_range=INIT,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.suppress_tokens = sorted(set(tokenizer.all_special_ids))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lm_folder(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_causal_lm(tmp_path_factory.mktemp("lm") / "llama")
