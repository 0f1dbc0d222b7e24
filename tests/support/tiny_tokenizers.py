"""Tokenizers and processors of the 2026 open model families, made offline for tests.

Never downloaded: byte-level BPEs with no merges (one token a byte) plus each family's
special tokens and chat template (Qwen2/Qwen3, Mistral), a character-level Unigram for
T5, and the processor folders of FLUX.2 dev (``PixtralProcessor``) and Qwen-Image-Edit
(``Qwen2VLProcessor``) written file by file as their model repos have them.

transformers 5 builds and loads those two processors only with torchvision (Pixtral's
is marked as needing it; Qwen2-VL's video processor needs it, and the processor will not
be built without one). ``qwen2_vl_processor_without_video`` is the stand-in where it is
missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The stand-in the server itself loads Qwen2-VL processors with where torchvision is missing.
from diffuserve.engine.backends.diffusers.loading import qwen2_vl_processor_without_video

__all__ = [
    "MISTRAL_CHAT_TEMPLATE",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN3_CHAT_TEMPLATE",
    "build_tiny_mistral_tokenizer",
    "build_tiny_qwen_tokenizer",
    "build_tiny_t5_tokenizer",
    "has_torchvision",
    "qwen2_vl_processor_without_video",
    "write_pixtral_processor",
    "write_qwen2_vl_processor",
]


def has_torchvision() -> bool:
    """Whether transformers can build the processors that need torchvision."""
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


# --------------------------------------------------------------------------- tokenizers

_QWEN_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
)

# Qwen3's template, cut to what the pipelines use: user turns, a generation prompt, and
# the empty thinking block that ``enable_thinking=False`` asks for.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)

# Qwen2-VL's template for contents that are lists of text and image parts.
QWEN2_VL_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- else %}{{- part['text'] }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_MISTRAL_SPECIALS = (
    "<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
)

# Mistral Small 3.1's template, cut to system and user turns of text (and [IMG] parts).
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' }}{%- endif %}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '[IMG]' }}{%- else %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[/INST]' }}"
    "{%- else %}{{- eos_token }}{%- endif %}{%- endfor %}"
)


def _byte_vocab() -> dict[str, int]:
    """The 256 byte characters of a byte-level BPE, ids 0..255."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: i for i, c in enumerate(bytes_to_unicode().values())}


def build_tiny_qwen_tokenizer(chat_template: str = QWEN3_CHAT_TEMPLATE) -> Any:
    """A ``Qwen2Tokenizer`` (byte-level BPE, no merges) with Qwen's special tokens.

    Ids: 0..255 the bytes, then ``_QWEN_SPECIALS`` in order (256 ``<|endoftext|>``…).
    """
    from transformers import Qwen2Tokenizer

    vocab = _byte_vocab()
    for token in _QWEN_SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=32768)
    tokenizer.add_tokens(list(_QWEN_SPECIALS), special_tokens=True)
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_mistral_tokenizer() -> Any:
    """A byte-level BPE tokenizer (no merges) with Mistral's control tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_MISTRAL_SPECIALS)}
    for c in _byte_vocab():
        vocab[c] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", model_max_length=131072,
    )
    tokenizer.add_tokens(list(_MISTRAL_SPECIALS[4:]), special_tokens=True)
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_t5_tokenizer() -> Any:
    """A ``T5Tokenizer`` (Unigram) over printable ASCII, each with and without ``▁``.

    Ids: 0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``, 3 ``▁``, then the characters.
    """
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for code in range(33, 127):
        pieces += [("▁" + chr(code), -3.0), (chr(code), -4.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


# --------------------------------------------------------------------------- processors

# Qwen2.5-VL's processor: 4 to 16384 patches of 28x28 pixels (after the 2x2 merge).
_QWEN_MIN_PIXELS, _QWEN_MAX_PIXELS = 56 * 56, 28 * 28 * 16384

def write_pixtral_processor(folder: Path, tokenizer: Any) -> None:
    """FLUX.2 dev's ``tokenizer/`` as its model repo has it: a ``PixtralProcessor`` saved as
    the tokenizer's files, ``preprocessor_config.json`` and ``processor_config.json``.

    Written part by part: transformers builds no ``PixtralProcessor`` without torchvision.
    """
    from transformers import PixtralImageProcessor

    tokenizer.save_pretrained(folder)
    PixtralImageProcessor(patch_size=14, size={"longest_edge": 1540}).save_pretrained(folder)
    processor_config = {
        "processor_class": "PixtralProcessor", "patch_size": 14, "spatial_merge_size": 2,
        "image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]",
    }
    (folder / "processor_config.json").write_text(json.dumps(processor_config, indent=2))


def write_qwen2_vl_processor(folder: Path) -> None:
    """Qwen-Image-Edit's ``processor/`` as its model repo has it: the tokenizer's files,
    ``preprocessor_config.json``, ``video_preprocessor_config.json``, the chat template.

    Written part by part because transformers builds no ``Qwen2VLProcessor`` (whose
    video processor needs torchvision) to save it whole where torchvision is missing.
    """
    from transformers import Qwen2VLImageProcessor

    tokenizer = build_tiny_qwen_tokenizer(QWEN2_VL_CHAT_TEMPLATE)
    tokenizer.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=_QWEN_MIN_PIXELS,
                                            max_pixels=_QWEN_MAX_PIXELS)
    image_processor.save_pretrained(folder)
    video_config = {
        key: value for key, value in json.loads(image_processor.to_json_string()).items()
        if key != "image_processor_type"
    }
    video_config["video_processor_type"] = "Qwen2VLVideoProcessor"
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video_config, indent=2))
    (folder / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE)
