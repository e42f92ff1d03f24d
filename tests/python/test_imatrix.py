"""llama.cpp's importance matrix: collection rules, GGUF and legacy files (checked with the gguf
package and with llama.cpp's own loader rules), and its effect on quantization error."""
import numpy as np
import pytest
import torch

import mpq


def calibrated(batches):
    cal = mpq.Calibrator()
    for name, x in batches:
        cal.observe(name, x)
    return cal


def test_small_batches_are_skipped_like_llama_imatrix():
    torch.manual_seed(0)
    big, small = torch.randn(20, 8), torch.randn(15, 8)
    cal = calibrated([("blk.0.attn_q", big), ("blk.0.attn_q", small), ("output", big), ("token_embd", big)])
    s = cal.stats("blk.0.attn_q")
    assert s.tokens == 35 and s.imatrix_tokens == 20
    torch.testing.assert_close(s.imatrix_sum_sq, (big ** 2).sum(0))
    im = cal.imatrix(chunk_size=10, datasets=["calib.txt"])
    assert im.names() == ["blk.0.attn_q.weight"]  # blk.* only, unless asked for the output
    assert cal.imatrix(chunk_size=10, include_output=True).names() == ["blk.0.attn_q.weight", "output.weight"]
    assert im["blk.0.attn_q.weight"].count == 20 and im.chunk_count == 2
    torch.testing.assert_close(im.importance("blk.0.attn_q.weight"), (big ** 2).mean(0))


def test_gguf_file_matches_llama_imatrix_layout(tmp_path):
    from gguf import GGUFReader

    cal = calibrated([("blk.1.ffn_down", torch.randn(32, 172)), ("blk.0.attn_v", torch.randn(64, 64))])
    im = cal.imatrix(chunk_size=32, datasets=["wiki.valid.raw"])
    path = tmp_path / "imatrix.gguf"
    im.save(str(path))
    r = GGUFReader(str(path))
    fields = {f.name: f.contents() for f in r.fields.values()}
    assert fields["general.type"] == "imatrix"
    assert fields["imatrix.datasets"] == ["wiki.valid.raw"]
    assert fields["imatrix.chunk_size"] == 32 and fields["imatrix.chunk_count"] == 2
    t = {x.name: x for x in r.tensors}
    assert list(t["blk.1.ffn_down.weight.in_sum2"].shape) == [172, 1]
    assert list(t["blk.1.ffn_down.weight.counts"].shape) == [1, 1]
    np.testing.assert_allclose(np.asarray(t["blk.1.ffn_down.weight.in_sum2"].data).reshape(-1),
                               cal.stats("blk.1.ffn_down").imatrix_sum_sq.numpy(), rtol=1e-6)
    assert float(np.asarray(t["blk.0.attn_v.weight.counts"].data).reshape(-1)[0]) == 64
    back = mpq.Imatrix.load(str(path))
    assert back.names() == im.names() and back.datasets == ["wiki.valid.raw"]
    torch.testing.assert_close(back.importance("blk.1.ffn_down.weight"), im.importance("blk.1.ffn_down.weight"))


def test_legacy_round_trip_keeps_the_importance(tmp_path):
    cal = calibrated([("blk.0.attn_q", torch.randn(100, 16))])
    im = cal.imatrix(chunk_size=32, datasets=["d.txt"])
    path = tmp_path / "imatrix.dat"
    im.save_legacy(str(path))
    raw = path.read_bytes()
    # int32 entries, int32 name length, name, int32 ncall = ceil(100 / 32) = 4, int32 nval = 16
    assert np.frombuffer(raw[:4], np.int32)[0] == 1
    assert raw[8:8 + 19] == b"blk.0.attn_q.weight"
    assert list(np.frombuffer(raw[27:35], np.int32)) == [4, 16]
    back = mpq.Imatrix.load(str(path))
    assert back.datasets == ["d.txt"] and back.chunk_count == 3
    torch.testing.assert_close(back.importance("blk.0.attn_q.weight"), im.importance("blk.0.attn_q.weight"))


def test_corrupt_imatrix_files_are_rejected(tmp_path):
    cal = calibrated([("blk.0.attn_q", torch.randn(100, 16))])
    for save in ("save", "save_legacy"):
        path = tmp_path / f"i.{save}"
        getattr(cal.imatrix(chunk_size=32), save)(str(path))
        data = path.read_bytes()
        for cut in range(1, len(data) - 8, 7):
            path.write_bytes(data[:cut])
            try:
                mpq.Imatrix.load(str(path))
            except ValueError:
                pass
    with pytest.raises(OSError):
        mpq.Imatrix.load(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no entry"):
        cal.imatrix(chunk_size=32).importance("blk.9.attn_q.weight")
