"""Pictures of a sensitivity table and a plan (PNG, matplotlib; `pip install matplotlib`)."""
from __future__ import annotations

import math
import os

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("mpq's plots need matplotlib: pip install matplotlib") from e
    return plt


def _save(fig, path) -> str:
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return os.fspath(path)


def sensitivity_heatmap(table, path, *, value: str = "proxy") -> str:
    """Tensors × options, log10 of the proxy error per weight (value="proxy") or of the measured
    KL (value="kl"); unavailable or unmeasured cells blank."""
    plt = _pyplot()
    if value not in ("proxy", "kl"):
        raise ValueError(f"value must be 'proxy' or 'kl', not {value!r}")
    m = np.array(table.proxy_matrix() if value == "proxy" else table.kl_matrix(), dtype=np.float64)
    if value == "proxy":
        m = m / np.array([table.tensor_weights(i) for i in range(table.num_tensors)])[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(m > 0, np.log10(m), np.nan)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * table.num_options, 2 + 0.12 * table.num_tensors))
    im = ax.imshow(m, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(table.num_options), table.options, rotation=60, ha="right", fontsize=7)
    step = max(1, math.ceil(table.num_tensors / 60))
    ax.set_yticks(range(0, table.num_tensors, step),
                  [table.tensor_name(i) for i in range(0, table.num_tensors, step)], fontsize=6)
    fig.colorbar(im, ax=ax, label="log10 proxy error per weight" if value == "proxy" else "log10 KL")
    ax.set_title("sensitivity: what each option costs each tensor")
    out = _save(fig, path)
    plt.close(fig)
    return out


def bit_allocation(table, genome, path, *, title: str = "bits per weight chosen per tensor") -> str:
    """Bits per weight of each tensor under a plan (genome), in model order."""
    plt = _pyplot()
    genome = np.asarray(genome)
    bpw = [8.0 * table.cell(i, int(g))[0] / table.tensor_weights(i) for i, g in enumerate(genome)]
    fig, ax = plt.subplots(figsize=(max(6, 0.05 * len(bpw)), 3))
    ax.bar(range(len(bpw)), bpw, width=1.0)
    ax.set_xlabel("tensor (model order: token_embd, blk.0 …)")
    ax.set_ylabel("bits per weight")
    ax.set_title(title)
    out = _save(fig, path)
    plt.close(fig)
    return out


def size_vs_quality(points: list[dict], path, *, quality: str = "ppl") -> str:
    """Scatter of bits per weight vs a quality measure, with the Pareto front drawn; points are
    dicts with "label", "bpw" and the quality key (lower is better)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in points:
        ax.scatter(p["bpw"], p[quality])
        ax.annotate(p["label"], (p["bpw"], p[quality]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: p["bpw"]):
        if p[quality] < best:
            best = p[quality]
            front.append(p)
    ax.plot([p["bpw"] for p in front], [p[quality] for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel("bits per weight (every tensor of the file)")
    ax.set_ylabel(quality)
    ax.legend()
    out = _save(fig, path)
    plt.close(fig)
    return out


def tensor_allocation(files: dict[str, dict[str, float]], path, *,
                      title: str = "bits per weight of each tensor") -> str:
    """Bits per weight of each 2-D tensor in several GGUF files (label -> {tensor: bpw}), one
    line per file in the first file's tensor order: where a mixed plan spends its bits."""
    plt = _pyplot()
    names = list(next(iter(files.values())))
    fig, ax = plt.subplots(figsize=(max(6, 0.05 * len(names)), 3.2))
    for label, bpw in files.items():
        ax.step(range(len(names)), [bpw.get(n, float("nan")) for n in names], where="mid", label=label)
    ax.set_xlabel("tensor (file order: token_embd, blk.0 …)")
    ax.set_ylabel("bits per weight")
    ax.set_title(title)
    ax.legend(fontsize=7)
    out = _save(fig, path)
    plt.close(fig)
    return out
