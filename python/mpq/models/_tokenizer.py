"""mpq's tokenizer interface (encode(text, bos) -> ids, decode(ids), bos_id, eos_id) over a
transformers tokenizer; llama2.c's tokenizer (_llama2c.Llama2cTokenizer) has the same one."""
from __future__ import annotations


class HFTokenizer:
    """Adapts a transformers tokenizer to mpq's encode(text, bos) / decode(ids) interface."""

    def __init__(self, tok):
        self.tok = tok
        self.bos_id = tok.bos_token_id
        self.eos_id = tok.eos_token_id

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        if eos and self.eos_id is not None:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=True)


# The BPE pre-tokenizers of the families mpq targets, under llama.cpp's names (llama-vocab.cpp):
# the split regex of each, as Hugging Face's tokenizer.json writes it and as llama.cpp does (the
# form GGUF import rebuilds; both split text the same way).
_QWEN2_SPLIT = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = _QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|", 1)
_HF_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|"
_LLAMA_CPP_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|"
SPLIT_REGEXES = {
    "qwen2": (_LLAMA_CPP_CONTRACTIONS + _QWEN2_SPLIT, _HF_CONTRACTIONS + _QWEN2_SPLIT),
    "llama-bpe": (_LLAMA_CPP_CONTRACTIONS + _LLAMA3_SPLIT, _HF_CONTRACTIONS + _LLAMA3_SPLIT),
}
BPE_PRE_TOKENIZERS = ("gpt-2", "smollm", *SPLIT_REGEXES)


def pre_tokenizer_name(definition: dict | None) -> str:
    """llama.cpp's name for a BPE pre-tokenizer, read from its definition (the "pre_tokenizer"
    of a tokenizer.json): what it does, never guessed from the vocabulary.

    Raises:
        ValueError: a pre-tokenizer mpq does not know; exporting it under a wrong name would make
            llama.cpp split text differently from the model's own tokenizer.
    """
    steps = (definition or {}).get("pretokenizers", [definition]) \
        if (definition or {}).get("type") == "Sequence" else [definition]
    kinds = [s.get("type") if isinstance(s, dict) else None for s in steps]
    byte_level_regex = lambda s: s.get("use_regex", True)
    if kinds == ["ByteLevel"] and byte_level_regex(steps[0]):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level_regex(steps[1]):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not byte_level_regex(steps[1]):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, forms in SPLIT_REGEXES.items():
            if pattern in forms:
                return name
    raise ValueError(f"unknown BPE pre-tokenizer {definition!r}: mpq exports "
                     f"{', '.join(BPE_PRE_TOKENIZERS)} (llama.cpp's names)")


def build_pre_tokenizer(name: str):
    """The `tokenizers` pre-tokenizer llama.cpp's pre-tokenizer `name` stands for."""
    from tokenizers import Regex, pre_tokenizers

    if name == "gpt-2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if name in SPLIT_REGEXES:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_REGEXES[name][0]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError(f"BPE pre-tokenizer '{name}' is not supported ({', '.join(BPE_PRE_TOKENIZERS)})")
