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


def size_vs_quality(points: list[dict], path, *, quality: str = "ppl", log: bool = False,
                    title: str | None = None) -> str:
    """Scatter of bits per weight vs a quality measure (lower is better), with the Pareto front.
    Points are dicts with "bpw", the quality key, "label" and optionally "method": one colour and
    marker per method (the legend; without a method each label is one), and where a point has a
    method and a label, the label is written beside it where it overlaps no other label, no
    marker and not the legend (label None: the point stays unlabelled)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    methods = list(dict.fromkeys(p.get("method", p["label"]) for p in points))
    colours = plt.get_cmap("tab10")
    markers = "osD^vP*Xph<>"
    for k, m in enumerate(methods):
        mine = [p for p in points if p.get("method", p["label"]) == m]
        ax.scatter([p["bpw"] for p in mine], [p[quality] for p in mine], color=colours(k % 10),
                   marker=markers[k % len(markers)], s=36, label=m, zorder=3)
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: p["bpw"]):
        if p[quality] < best:
            best = p[quality]
            front.append(p)
    ax.plot([p["bpw"] for p in front], [p[quality] for p in front], "k--", lw=0.8, label="Pareto front", zorder=2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("bits per weight (every tensor of the file)")
    ax.set_ylabel(quality)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    _place_labels(fig, ax, [(p["bpw"], p[quality], p["label"]) for p in points
                            if p.get("method") is not None and p.get("label") is not None])
    out = _save(fig, path)
    plt.close(fig)
    return out


def _place_labels(fig, ax, items) -> None:
    """Annotates each (x, y, text) at the first of a ring of offsets whose box overlaps no label
    placed so far, no marker and the legend (display coordinates); the nearest free spot wins."""
    if not items:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pad = 3
    taken = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() else []
    for x, y, _ in items:
        px, py = ax.transData.transform((x, y))
        taken.append(_Box(px - 4, py - 4, px + 4, py + 4))
    offsets = [(dx, dy) for r in (6, 14, 24, 36, 50) for dx, dy in
               ((r, r), (r, -r), (-r, r), (-r, -r), (r, 0), (-r, 0), (0, r), (0, -r))]
    inside = ax.get_window_extent(renderer)
    for x, y, text in sorted(items):
        for dx, dy in offsets:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset pixels", fontsize=6.5,
                            ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top",
                            arrowprops=dict(arrowstyle="-", lw=0.4, color="0.5") if max(abs(dx), abs(dy)) > 6 else None)
            bb = t.get_window_extent(renderer)
            box = _Box(bb.x0 - pad, bb.y0 - pad, bb.x1 + pad, bb.y1 + pad)
            if not any(box.overlaps(o) for o in taken) and inside.x0 <= box.x0 and box.x1 <= inside.x1 \
                    and inside.y0 <= box.y0 and box.y1 <= inside.y1:
                taken.append(box)
                break
            t.remove()
        else:  # no free spot in the ring: the label goes to the first offset, overlapping
            ax.annotate(text, (x, y), xytext=offsets[0], textcoords="offset pixels", fontsize=6.5)


class _Box:
    def __init__(self, x0, y0, x1, y1):
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1

    def overlaps(self, o) -> bool:
        return self.x0 < o.x1 and o.x0 < self.x1 and self.y0 < o.y1 and o.y0 < self.y1


# The columns of format_grid: the per-block tensor kinds in llama.cpp's names, then the two
# tensors outside the blocks (drawn in a row of their own).
_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_OUTSIDE = ("token_embd", "output")


def format_grid(plans: dict[str, dict[str, str]], path, *,
                title: str = "format of each tensor") -> str:
    """One panel per file (label -> {GGUF tensor name -> format}): layers × tensor kinds
    (attn_q … ffn_down), token_embd and output in a top row of their own, each cell coloured by
    its format; colours run from the fewest bits per weight to the most, shared by all panels."""
    from .. import _C

    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    def bpw(f: str) -> float:  # a long row: no partial block
        return _C.find_format(f).bits_per_weight(1 << 18) if f in _C.list_formats() else math.inf

    cols = _KINDS + _OUTSIDE

    def cell(name: str) -> tuple[int, int] | None:  # (row, column), row 0 the tensors outside the blocks
        parts = name.split(".")
        if parts[0] == "blk" and len(parts) > 2 and parts[2] in _KINDS:
            return 1 + int(parts[1]), cols.index(parts[2])
        return (0, cols.index(parts[0])) if parts[0] in _OUTSIDE else None

    cells = {label: {rc: f for n, f in plan.items() if (rc := cell(n)) is not None} for label, plan in plans.items()}
    formats = sorted({f for c in cells.values() for f in c.values()}, key=lambda f: (bpw(f), f))
    index = {f: i for i, f in enumerate(formats)}
    layers = max((r for c in cells.values() for r, _ in c), default=0)
    fig, axes = plt.subplots(1, len(plans), figsize=(1.0 + 2.6 * len(plans), 1.6 + 0.16 * layers),
                             squeeze=False)
    cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, max(2, len(formats))))[:len(formats)])
    for ax, (label, placed) in zip(axes[0], cells.items()):
        grid = np.full((layers + 1, len(cols)), np.nan)
        for (r, c), fmt in placed.items():
            grid[r, c] = index[fmt]
        ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(formats) - 0.5, interpolation="nearest")
        ax.set_xticks(range(len(cols)), cols, rotation=70, fontsize=6.5)
        step = max(1, math.ceil(layers / 14))
        ax.set_yticks([0] + list(range(1, layers + 1, step)), ["file"] + [str(i) for i in range(0, layers, step)],
                      fontsize=6.5)
        ax.set_title(label, fontsize=8)
    axes[0][0].set_ylabel("layer")
    fig.subplots_adjust(wspace=0.35)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(formats))]
    fig.legend(handles, [f"{f} ({bpw(f):.2f})" for f in formats], fontsize=7, loc="center left",
               bbox_to_anchor=(axes[0][-1].get_position().x1 + 0.01, 0.5), title="format (bpw)", title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    out = _save(fig, path)
    plt.close(fig)
    return out
