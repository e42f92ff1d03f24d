"""Loading a causal LM from local files: a Hugging Face directory, a GGUF file (dequantized) or a
llama2.c checkpoint, with its tokenizer."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import data
from ._gguf_import import load_gguf
from ._llama2c import Llama2cTokenizer, load_llama2c
from ._names import SUPPORTED_ARCHITECTURES
from ._tokenizer import HFTokenizer


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer. `tokenizer.encode(text, bos=...)` returns token ids."""

    model: nn.Module
    tokenizer: object
    name: str
    source: str  # where it was loaded from
    info: dict = field(default_factory=dict)

    @property
    def max_context(self) -> int:
        return int(self.model.config.max_position_embeddings)


def load_model(path: str | os.PathLike | None = None, *, tokenizer: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Loads a causal LM from local files.

    Args:
        path: a Hugging Face model directory (Llama, Qwen2 or Qwen3 architecture), a GGUF file
            (dequantized), a llama2.c checkpoint (.bin), or None for the default model.
        tokenizer: the llama2.c tokenizer for a .bin checkpoint (default: tokenizer.bin or
            tok<vocab>.bin beside the checkpoint); for a Hugging Face directory, a tokenizer
            directory or llama2.c tokenizer file to use instead of the directory's own.
        device: where the model goes.
        dtype: parameter dtype.

    Returns:
        LoadedModel in eval mode.
    """
    if path is None:
        path = data.default_model_path()
        tokenizer = tokenizer or data.default_tokenizer_path()
    path = os.fspath(path)
    if path.endswith(".gguf") and os.path.isfile(path):
        model, tok, _ = load_gguf(path, dtype=dtype)
        name = os.path.splitext(os.path.basename(path))[0]
    elif os.path.isdir(path):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"{path}: architecture '{config.model_type}' is not supported; mpq "
                             f"supports {', '.join(SUPPORTED_ARCHITECTURES)}")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        if tokenizer is not None and os.path.isfile(tokenizer):
            tok = Llama2cTokenizer(os.fspath(tokenizer), vocab_size=config.vocab_size)
        else:
            tok = HFTokenizer(AutoTokenizer.from_pretrained(tokenizer or path, local_files_only=True))
        name = os.path.basename(os.path.normpath(path))
    elif os.path.isfile(path):
        model = load_llama2c(path, dtype=dtype)
        if tokenizer is None:
            # llama2.c's convention is tokenizer.bin; stories260K ships its own tok512.bin.
            here = os.path.dirname(path)
            found = [p for p in ("tokenizer.bin", f"tok{model.config.vocab_size}.bin")
                     if os.path.isfile(os.path.join(here, p))]
            tokenizer = os.path.join(here, found[0] if found else "tokenizer.bin")
        if not os.path.isfile(tokenizer):
            raise ValueError(f"{path}: a llama2.c checkpoint needs its tokenizer; {tokenizer} "
                             "does not exist (pass tokenizer=...)")
        tok = Llama2cTokenizer(tokenizer, vocab_size=model.config.vocab_size)
        name = os.path.splitext(os.path.basename(path))[0]
    else:
        raise ValueError(f"model path {path} does not exist (expected a Hugging Face model "
                         "directory or a llama2.c checkpoint file)")
    for pname, param in model.named_parameters():
        # Checked here, where the weight's name is known: later a NaN shows up only as some
        # layer's activations.
        if not torch.isfinite(param).all():
            raise ValueError(f"{path}: weight {pname} holds NaN or infinite values")
    model = model.to(device).eval()
    return LoadedModel(model, tok, name, path)
