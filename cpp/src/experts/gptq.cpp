// GPTQ's column loop (IST-DASLab/gptq, gptq.py) over any format's grid (gptq_groups.h).
//
// Within a block of columns every row is independent: row r's rounding errors only update row r.
// The CPU path therefore runs the whole block per row on ATen's thread pool, CUDA a warp per row
// (cuda/gptq_block.cu, when mpq is built with CUDA), other devices column by column in ATen ops.
// Between blocks, the pending updates of the remaining columns are one matrix product (the lazy
// batch update).
#include <mpq/gptq.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <mpq/error.h>
#include <mpq/kquants.h>

#include "core/checks.h"
#include "experts/expert_util.h"
#include "experts/cuda/gptq_block.h"
#include "experts/gptq_groups.h"

#ifdef MPQ_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace mpq {
namespace {

using detail::GptqGroups;
namespace ggml = detail::ggml;

// Quantizes columns [a, b) of a block w1 [rows, bw] (CPU, contiguous), updating columns >= a of
// each row; writes errors err1 and codes1 [rows, bw].
void block_cpu(at::Tensor& w1, const at::Tensor& hinv1, const at::Tensor& scale1,
               const at::Tensor& offset1, at::Tensor& err1, at::Tensor& codes1, int64_t a,
               int64_t b, const GptqGroups& groups) {
  const int64_t rows = w1.size(0), bw = w1.size(1);
  float* w = w1.data_ptr<float>();
  const float* h = hinv1.data_ptr<float>();
  const float* sc = scale1.data_ptr<float>();
  const float* off = offset1.data_ptr<float>();
  float* err = err1.data_ptr<float>();
  int32_t* codes = codes1.data_ptr<int32_t>();
  const ggml::GridInfo& grid = groups.grid();
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* wr = w + r * bw;
      for (int64_t i = a; i < b; ++i) {
        const int64_t k = r * bw + i;
        const int32_t q = ggml::nearest_code(grid, sc[k], off[k], wr[i]);
        // A product with the reciprocal, as the CUDA kernel computes it (off its critical path).
        const float e = (wr[i] - ggml::grid_value(grid, sc[k], off[k], q)) * (1.0f / h[i * bw + i]);
        codes[k] = q;
        err[k] = e;
        const float* hi = h + i * bw;
        for (int64_t j = i + 1; j < bw; ++j) wr[j] -= e * hi[j];
      }
    }
  });
}

#ifdef MPQ_WITH_CUDA
// The same as one CUDA kernel launch (w1 and the operands on the current CUDA device); with
// fit.group > 0 the kernel also fits the integer groups (scale1/offset1 are then not read). False
// when this build has no kernel image for the device (an older GPU): the caller falls back to
// ATen.
bool block_cuda(at::Tensor& w1, const at::Tensor& hinv1, const at::Tensor& scale1,
                const at::Tensor& offset1, at::Tensor& err1, at::Tensor& codes1, int64_t a,
                int64_t b, const GptqGroups& groups, const detail::cuda::GroupFit& fit,
                std::string_view name) {
  const ggml::GridInfo& g = groups.grid();
  const c10::cuda::CUDAGuard guard(w1.device());
  const int code = detail::cuda::gptq_block(
      w1.data_ptr<float>(), scale1.defined() ? scale1.data_ptr<float>() : nullptr,
      offset1.defined() ? offset1.data_ptr<float>() : nullptr, err1.data_ptr<float>(),
      codes1.data_ptr<int32_t>(), hinv1.data_ptr<float>(), w1.size(0), w1.size(1), a, b, g.qmin,
      g.qmax, g.zero_code, g.levels != nullptr, fit,
      c10::cuda::getCurrentCUDAStream(w1.device().index()).stream());
  if (code == detail::cuda::kNoKernelImage) return false;
  TORCH_CHECK(code == 0, name, ": GPTQ's CUDA kernel failed to launch: ",
              detail::cuda::error_string(code));
  return true;
}
#else
bool block_cuda(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&,
                at::Tensor&, int64_t, int64_t, const GptqGroups&, const detail::cuda::GroupFit&,
                std::string_view) {
  return false;  // built without CUDA kernels
}
#endif

// The same in ATen ops, column by column, for other accelerators.
void block_device(at::Tensor& w1, const at::Tensor& hinv1, const at::Tensor& scale1,
                  const at::Tensor& offset1, at::Tensor& err1, at::Tensor& codes1, int64_t a,
                  int64_t b, const GptqGroups& groups, const at::Tensor& levels) {
  const int64_t bw = w1.size(1);
  for (int64_t i = a; i < b; ++i) {
    at::Tensor x = w1.select(1, i), s = scale1.select(1, i), o = offset1.select(1, i);
    at::Tensor t = at::where(s == 0, at::zeros_like(x), (x - o) / s);
    at::Tensor q, value;
    if (!levels.defined()) {
      q = at::round(t).clamp_(groups.grid().qmin, groups.grid().qmax);
      value = q * s + o;
    } else {
      q = (t.unsqueeze(1) - levels.unsqueeze(0)).abs_().argmin(1);
      value = levels.index_select(0, q) * s + o;
    }
    at::Tensor e = (x - value) / hinv1[i][i];
    codes1.select(1, i).copy_(q);
    err1.select(1, i).copy_(e);
    if (i + 1 < bw) {
      w1.narrow(1, i + 1, bw - i - 1).sub_(e.unsqueeze(1) * hinv1[i].narrow(0, i + 1, bw - i - 1));
    }
  }
}

// R⁻¹ of an upper triangular R, by halves: [[A, B], [0, C]]⁻¹ = [[A⁻¹, X], [0, C⁻¹]] with
// X = −A⁻¹ (B C⁻¹), two matrix products: n³/3 multiply-adds, nearly all in GEMMs, where one
// triangular solve against the identity spends n³/2 in the slower triangular kernels.
// bench/inverse_factor.py compares the ways on a GPU.
at::Tensor upper_triangular_inverse(const at::Tensor& r) {
  const int64_t n = r.size(0);
  if (n <= 1024) return at::linalg_solve_triangular(r, at::eye(n, r.options()), /*upper=*/true);
  const int64_t m = (n / 2 + 63) / 64 * 64;  // keep the blocks aligned
  const at::Tensor a_inv = upper_triangular_inverse(r.narrow(0, 0, m).narrow(1, 0, m));
  const at::Tensor c_inv = upper_triangular_inverse(r.narrow(0, m, n - m).narrow(1, m, n - m));
  at::Tensor out = at::zeros_like(r);
  out.narrow(0, 0, m).narrow(1, 0, m).copy_(a_inv);
  out.narrow(0, m, n - m).narrow(1, m, n - m).copy_(c_inv);
  at::Tensor corner = out.narrow(0, 0, m).narrow(1, m, n - m);
  at::mm_out(corner, a_inv, at::mm(r.narrow(0, 0, m).narrow(1, m, n - m), c_inv)).neg_();
  return out;
}

// Upper Cholesky factor U of (H + damp·mean(diag H)·I)⁻¹ = UᵀU; doubles damp until it exists.
// GPTQ's reference takes three steps (Cholesky, inverse from the factor, Cholesky again: 2n³/3
// multiply-adds); with J the reversal permutation, J·chol(J H J)·J = R is upper triangular with
// H = R Rᵀ, so U = R⁻¹: one Cholesky and one triangular inverse (n³/6 + n³/3, the latter in
// GEMMs), and no less accurate (against the float64 factor, in float32: 1.2e-7 against 2.3e-7 on
// a random 256 × 256 Hessian, checked by hand; bench/inverse_factor.py on Qwen3-4B sizes).
at::Tensor inverse_factor(const at::Tensor& h, double& damp, double max_damp,
                          std::string_view name) {
  const at::Tensor mean_diag = h.diagonal().mean();
  const at::Tensor eye = at::eye(h.size(0), h.options());
  for (;;) {
    auto [m, info] = at::linalg_cholesky_ex((h + eye * (mean_diag * damp)).flip({0, 1}));
    at::Tensor u = upper_triangular_inverse(m.flip({0, 1}));
    // One sync per attempt. A factor that exists can still be too ill-conditioned to invert in
    // this precision; one that does not exist leaves garbage that is never returned.
    if ((info == 0).logical_and_(at::isfinite(u).all()).item<bool>()) return u;
    const double next = damp > 0 ? damp * 2 : 0.01;
    MPQ_CHECK_VALUE(next <= max_damp, name, ": the Hessian is not positive definite even with ",
                    "damping ", damp, " (max_damp ", max_damp, "); its calibration data may be "
                    "degenerate");
    damp = next;
  }
}

}  // namespace

void GptqOptions::validate() const {
  MPQ_CHECK_VALUE(damp >= 0 && std::isfinite(damp), "GptqOptions: damp must be >= 0, got ", damp);
  MPQ_CHECK_VALUE(max_damp >= damp, "GptqOptions: max_damp (", max_damp, ") must be >= damp (",
                  damp, ")");
  MPQ_CHECK_VALUE(block_size >= 1, "GptqOptions: block_size must be >= 1, got ", block_size);
}

std::string GptqOptions::to_string() const {
  auto b = [](bool v) { return v ? "True" : "False"; };
  return fmt::format("GptqOptions(damp={}, max_damp={}, block_size={}, act_order={}, "
                     "static_groups={}, mse_clip={}, importance={})",
                     damp, max_damp, block_size, b(act_order), b(static_groups), b(mse_clip),
                     b(importance));
}

GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const Format& format,
                         const GptqOptions& options, std::string_view name) {
  options.validate();
  format.validate();
  detail::check_floating(weight, name, 2);
  detail::check_finite(weight, name);
  const std::string hname = std::string(name) + " Hessian";
  detail::check_floating(hessian, hname, 2);
  const int64_t rows = weight.size(0), cols = weight.size(1);
  MPQ_CHECK_VALUE(hessian.size(0) == cols && hessian.size(1) == cols, hname, ": expected [", cols,
                  ", ", cols, "] for a weight with ", cols, " input columns, got ",
                  detail::describe(hessian));
  detail::check_finite(hessian, hname);
  if (format.family == FormatFamily::kGgml) {
    const int64_t bs = format.group_size;
    MPQ_CHECK_VALUE(bs > 0 && cols % bs == 0, name, ": rows of ", cols,
                    " weights are not a multiple of ", format.name, "'s block of ", bs,
                    " (llama-quantize would use ", ggml_fallback(format, cols).name, ")");
  }

  const at::Device dev = weight.device();
  at::Tensor w = weight.to(at::kFloat).clone();
  at::Tensor h = hessian.to(dev, at::kDouble).clone();
  at::Tensor dead = h.diagonal() == 0;
  GptqResult result;
  result.dead_columns = dead.sum().item<int64_t>();
  if (result.dead_columns == cols) {
    // No calibration signal reached this layer: every weight is equally (un)important.
    RtnOptions rtn;
    rtn.mse_clip = format.family == FormatFamily::kInteger && options.mse_clip;
    result.quantized = quantize(weight, format, std::nullopt, rtn, name);
    result.dead_columns = cols;
    return result;
  }
  // GPTQ's rule for inputs that were always zero: their weights cannot matter, zero them.
  h.diagonal().masked_fill_(dead, 1.0);
  w.masked_fill_(dead.unsqueeze(0), 0.0f);

  at::Tensor perm, invperm;
  if (options.act_order) {
    perm = at::argsort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true);
    invperm = at::argsort(perm);
  }
  std::unique_ptr<GptqGroups> groups =
      detail::make_gptq_groups(format, rows, cols, w.options(), options.mse_clip);
  const int64_t gs = groups->group_size();
  at::Tensor importance;
  if (format.family == FormatFamily::kGgml && options.importance) {
    importance = h.diagonal().to(at::kCPU, at::kFloat).contiguous();
  }
  // Fits the group starting at (global) column c0 to the columns of wsrc starting at `from`.
  auto fit = [&](const at::Tensor& wsrc, int64_t from, int64_t c0) {
    const int64_t n = std::min(gs, cols - c0);
    groups->fit(wsrc.narrow(1, from, n), c0,
                importance.defined() ? importance.narrow(0, c0, n).contiguous() : at::Tensor());
  };
  // Static: every group fitted to the original weights, before any update.
  const bool fixed = options.act_order || options.static_groups || gs >= cols;
  if (fixed) {
    for (int64_t c0 = 0; c0 < cols; c0 += gs) fit(w, c0, c0);
  }
  at::Tensor scale = groups->scale, offset = groups->offset;
  if (options.act_order) {
    w = w.index_select(1, perm);
    h = h.index_select(0, perm).index_select(1, perm);
    scale = scale.index_select(1, perm);
    offset = offset.index_select(1, perm);
  }

  result.damp = options.damp;
  // float64 on the CPU (cheap there); float32 elsewhere, as GPTQ's reference and its descendants
  // do: GPUs factor float64 several times slower (consumer GPUs at 1/64 of the float32 rate),
  // and the damping retry covers a factorization that fails.
  const at::ScalarType inverse_type = dev.is_cpu() ? at::kDouble : at::kFloat;
  const at::Tensor hinv =
      inverse_factor(h.to(inverse_type), result.damp, options.max_damp, name).to(at::kFloat);

  // Blocks and groups must nest, so that a group starts with its columns fully updated.
  int64_t bs = options.block_size;
  if (!fixed && bs % gs != 0 && gs % bs != 0) bs = gs;
  const bool cpu = dev.is_cpu();
  bool cuda = dev.is_cuda() && bs <= detail::cuda::kMaxBlock;  // until the kernel declines
  at::Tensor levels;  // the IQ4 table, for the device path
  if (groups->grid().levels != nullptr) {
    const ggml::GridInfo& g = groups->grid();
    levels = at::tensor(std::vector<float>(g.levels, g.levels + g.qmax - g.qmin + 1),
                        at::TensorOptions().dtype(at::kFloat))
                 .to(dev);
  }
  // CUDA, integer groups fitted as the loop reaches them, inside blocks: the kernel fits them too,
  // one launch per block.
  detail::cuda::GroupFit kernel_fit;
  GptqGroups::IntegerFit* ifit = groups->integer_fit();
  if (cuda && ifit != nullptr && !fixed && gs <= bs) {
    kernel_fit = {gs, 0, ifit->scales.size(1), ifit->bits, ifit->symmetric,
                  ifit->scales.data_ptr<float>(), ifit->zeros.data_ptr<float>()};
  }
  at::Tensor codes = at::empty({rows, cols}, w.options().dtype(at::kInt));
  for (int64_t i1 = 0; i1 < cols; i1 += bs) {
    const int64_t bw = std::min(bs, cols - i1);
    at::Tensor w1 = w.narrow(1, i1, bw).contiguous();
    at::Tensor err1 = at::empty({rows, bw}, w.options());
    at::Tensor codes1 = at::empty({rows, bw}, codes.options());
    const at::Tensor hinv1 = hinv.narrow(0, i1, bw).narrow(1, i1, bw).contiguous();
    kernel_fit.first = kernel_fit.group > 0 ? i1 / gs : 0;
    const bool fused = kernel_fit.group > 0 && block_cuda(w1, hinv1, at::Tensor(), at::Tensor(),
                                                          err1, codes1, 0, bw, *groups,
                                                          kernel_fit, name);
    if (!fused) {
      kernel_fit.group = 0;
      for (int64_t a = 0; a < bw;) {
        int64_t b = bw;
        if (!fixed) {
          // Fit each group as the loop reaches it: from this block's updated columns, or (a
          // group wider than the block) from w, which the lazy updates have brought up to date.
          const int64_t c = i1 + a;
          if (c % gs == 0) {
            if (gs <= bw - a) {
              fit(w1, a, c);
            } else {
              fit(w, c, c);
            }
          }
          b = std::min(bw, a + gs - c % gs);
        }
        at::Tensor s1 = scale.narrow(1, i1, bw).contiguous();
        at::Tensor o1 = offset.narrow(1, i1, bw).contiguous();
        if (cpu) {
          block_cpu(w1, hinv1, s1, o1, err1, codes1, a, b, *groups);
        } else if (!(cuda && block_cuda(w1, hinv1, s1, o1, err1, codes1, a, b, *groups, kernel_fit,
                                        name))) {
          cuda = false;
          block_device(w1, hinv1, s1, o1, err1, codes1, a, b, *groups, levels);
        }
        a = b;
      }
    }
    codes.narrow(1, i1, bw).copy_(codes1);
    if (i1 + bw < cols) {
      // The lazy batch update, one fused multiply-subtract.
      w.narrow(1, i1 + bw, cols - i1 - bw)
          .addmm_(err1, hinv.narrow(0, i1, bw).narrow(1, i1 + bw, cols - i1 - bw), 1.0, -1.0);
    }
  }
  if (options.act_order) codes = codes.index_select(1, invperm);
  result.quantized = groups->finish(codes, weight.scalar_type());
  return result;
}

std::vector<ExpertResult> GptqExpert::quantize(const std::vector<ExpertLayer>& layers,
                                               const LayerStats* stats, bool /*can_scale*/) const {
  detail::check_stats(layers, stats, name(), /*need_xtx=*/true);
  const at::Tensor h = stats->hessian();
  std::vector<ExpertResult> out;
  for (const ExpertLayer& layer : layers) {
    GptqResult g = gptq_quantize(layer.weight, h.to(layer.weight.device()), layer.format,
                                 options_, layer.name);
    ExpertResult r;
    r.name = layer.name;
    r.quantized = std::move(g.quantized);
    if (g.dead_columns == layer.weight.size(1)) {
      r.note = "no calibration signal (all inputs zero): quantized by RTN";
    } else if (g.damp != options_.damp) {
      r.note = fmt::format("damping raised to {} for a positive definite Hessian", g.damp);
    }
    fill_errors(r, layer.weight, h);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mpq
