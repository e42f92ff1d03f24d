import math

import pytest
import torch
from torch import nn

from mpq import data, evaluate


class Uniform(nn.Module):
    """A 'model' whose next-token distribution is uniform: perplexity = vocabulary size exactly."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        class Out:
            pass
        out = Out()
        out.logits = torch.zeros(*ids.shape, self.vocab) + self.p
        return out


def test_uniform_model_has_perplexity_of_vocab_size():
    tokens = torch.randint(0, 37, (1000,))
    r = evaluate.perplexity(Uniform(37), tokens, window=64, batch_size=3, progress=False)
    assert r["ppl"] == pytest.approx(37, rel=1e-6)
    assert r["windows"] == 1000 // 64 and r["tokens_scored"] == 15 * 63
    assert "63 scored" in r["protocol"]


def test_perplexity_equals_manual_cross_entropy(stories):
    tokens = torch.randint(3, 512, (3 * 128 + 5,))
    r = evaluate.perplexity(stories.model, tokens, window=128, batch_size=2, progress=False)
    total = 0.0
    with torch.no_grad():
        for w in tokens[:384].view(3, 128):
            logp = torch.log_softmax(stories.model(w[None]).logits[0].double(), -1)
            total -= logp[torch.arange(127), w[1:]].sum().item()
    assert r["ppl"] == pytest.approx(math.exp(total / (3 * 127)), rel=1e-5)


def test_stories260k_perplexity_is_sane(data_dir, stories):
    # Reported validation loss 1.297 (perplexity 3.66) on llama2.c's own validation shard; this
    # text is TinyStories-valid.txt, a different sample, so only the ballpark is comparable.
    tokens = data.tokenize_file(stories.tokenizer, data_dir / "text" / "tinystories_valid.txt", first=200)
    r = evaluate.perplexity(stories.model, tokens, window=512, progress=False)
    assert 3.0 < r["ppl"] < 5.5, r


def test_windows_rejects_bad_input():
    with pytest.raises(ValueError, match="do not fill one window"):
        data.windows(torch.arange(10), 64)
    with pytest.raises(ValueError, match="1-D"):
        data.windows(torch.zeros(2, 100, dtype=torch.long), 10)
