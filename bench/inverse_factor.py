"""GPTQ's inverse factor U (H⁻¹ = UᵀU, upper) four ways, timed on one device, with their error.

- three steps: GPTQ's reference and llm-compressor (Cholesky, inverse from the factor, Cholesky
  again): 2n³/3 multiply-adds;
- reversed Cholesky + one triangular solve against the identity (mpq before): n³/6 + n³/2;
- reversed Cholesky + the triangular inverse by halves, the corner by two triangular solves:
  n³/6 + n³/6 multiply-adds, but in cuBLAS's slower triangular kernels;
- the same, the corner by two GEMMs from the halves' inverses: n³/6 + n³/3, nearly all in GEMMs
  (mpq's gptq.cpp, leaves of 1024; written again here in torch so that all are timed alike).

Hessians as bench/gptq_gpu.py makes them (sizes of Qwen3-4B's inputs), float32, damping 0.01;
error: the largest |U − U64| / max|U64| against the float64 three-step factor.

    python bench/inverse_factor.py --device cuda
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gptq_gpu import hessian


def damped(h: torch.Tensor) -> torch.Tensor:
    return h + torch.eye(h.shape[0], dtype=h.dtype, device=h.device) * (0.01 * h.diagonal().mean())


def three_steps(h: torch.Tensor) -> torch.Tensor:
    lower = torch.linalg.cholesky(damped(h))
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def reversed_cholesky(h: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cholesky(damped(h).flip(0, 1)).flip(0, 1)


def solve_identity(h: torch.Tensor) -> torch.Tensor:
    r = reversed_cholesky(h)
    return torch.linalg.solve_triangular(r, torch.eye(r.shape[0], dtype=r.dtype, device=r.device),
                                         upper=True)


def triangular_inverse(r: torch.Tensor) -> torch.Tensor:
    n = r.shape[0]
    if n <= 512:
        return torch.linalg.solve_triangular(r, torch.eye(n, dtype=r.dtype, device=r.device),
                                             upper=True)
    m = (n // 2 + 63) // 64 * 64
    a, b, c = r[:m, :m], r[:m, m:], r[m:, m:]
    out = torch.zeros_like(r)
    out[:m, :m] = triangular_inverse(a)
    out[m:, m:] = triangular_inverse(c)
    ainv_b = torch.linalg.solve_triangular(a, b, upper=True)
    out[:m, m:] = -torch.linalg.solve_triangular(c, ainv_b, upper=True, left=False)
    return out


def by_halves(h: torch.Tensor) -> torch.Tensor:
    return triangular_inverse(reversed_cholesky(h))


def triangular_inverse_gemm(r: torch.Tensor, leaf: int) -> torch.Tensor:
    """The same by halves, the corner from the halves' inverses by two matrix products
    (X = −A⁻¹ (B C⁻¹)): n³/3 multiply-adds, all in GEMMs."""
    n = r.shape[0]
    if n <= leaf:
        return torch.linalg.solve_triangular(r, torch.eye(n, dtype=r.dtype, device=r.device),
                                             upper=True)
    m = (n // 2 + 63) // 64 * 64
    out = torch.zeros_like(r)
    ainv = triangular_inverse_gemm(r[:m, :m], leaf)
    cinv = triangular_inverse_gemm(r[m:, m:], leaf)
    out[:m, :m], out[m:, m:] = ainv, cinv
    out[:m, m:] = -(ainv @ (r[:m, m:] @ cinv))
    return out


def gemm_halves_512(h: torch.Tensor) -> torch.Tensor:
    return triangular_inverse_gemm(reversed_cholesky(h), 512)


def gemm_halves_1024(h: torch.Tensor) -> torch.Tensor:
    return triangular_inverse_gemm(reversed_cholesky(h), 1024)


def solve_identity_f64(h: torch.Tensor) -> torch.Tensor:
    return solve_identity(h.double()).float()


def cholesky_only(h: torch.Tensor) -> torch.Tensor:
    return reversed_cholesky(h)


def timed(fn, h, reps, device):
    fn(h)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(h)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2560, 4096, 9728])
    ap.add_argument("--tokens", type=int, default=128 * 2048)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    for n in args.sizes:
        h = hessian(n, args.tokens, device)
        ref = three_steps(h.double())
        row = {"n": n, "device": str(device)}
        for name, fn in (("three_steps", three_steps), ("solve_identity", solve_identity),
                         ("by_halves", by_halves), ("gemm_halves_512", gemm_halves_512),
                         ("gemm_halves_1024", gemm_halves_1024),
                         ("solve_identity_f64", solve_identity_f64)):
            secs, u = timed(fn, h, args.reps, device)
            row[f"{name}_s"] = round(secs, 5)
            row[f"{name}_err"] = float(((u.double() - ref).abs().max() / ref.abs().max()))
        row["cholesky_only_s"] = round(timed(cholesky_only, h, args.reps, device)[0], 5)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
