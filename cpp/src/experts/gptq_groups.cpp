#include "experts/gptq_groups.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <mpq/error.h>

#include "ggml/block_grid.h"
#include "ggml/ggml_quants.h"
#include "ggml/ggml_types.h"
#include "quant/groups.h"

namespace mpq::detail {
namespace {

namespace g = ggml;

// Integer formats: value = scale * (q - zero) = scale * q + offset with offset = -scale * zero,
// exact in float32 (fp16 scale times an integer below 2^8).
class IntegerGroups : public GptqGroups {
 public:
  IntegerGroups(const Format& f, int64_t rows, int64_t cols, const at::TensorOptions& dev,
                bool mse_clip)
      : format_(f) {
    group_size_ = f.group_size == 0 ? cols : std::min(f.group_size, cols);
    grid_ = ggml::GridInfo{0, (1 << f.bits) - 1, nullptr, 0};
    rtn_.mse_clip = mse_clip;
    const int64_t groups = f.groups_per_row(cols);
    fit_.bits = f.bits;
    fit_.symmetric = f.symmetric;
    fit_.scales = at::zeros({rows, groups}, dev.dtype(at::kFloat));
    fit_.zeros = at::zeros({rows, groups}, dev.dtype(at::kFloat));
    scale = at::zeros({rows, cols}, dev.dtype(at::kFloat));
    offset = at::zeros({rows, cols}, dev.dtype(at::kFloat));
  }

  void fit(const at::Tensor& w, int64_t c0, const at::Tensor&) override {
    const int64_t n = w.size(1), k = c0 / group_size_;
    // A short last group is padded with zeros, as quantize_rtn does.
    at::Tensor wg = at::constant_pad_nd(w, {0, group_size_ - n}, 0).unsqueeze(1);
    GroupParams p = fit_groups(wg, format_, rtn_);
    fit_.scales.select(1, k).copy_(p.scale.squeeze(1));
    fit_.zeros.select(1, k).copy_(p.zero.squeeze(1));
    scale.narrow(1, c0, n).copy_(p.scale.expand({-1, n}));
    offset.narrow(1, c0, n).copy_(p.scale.mul(p.zero).neg_().expand({-1, n}));
  }

  QuantizedTensor finish(const at::Tensor& codes, at::ScalarType dtype) override {
    QuantizedTensor q;
    q.format = format_.name;
    q.rows = codes.size(0);
    q.cols = codes.size(1);
    q.dtype = dtype;
    q.codes = pack_codes(codes.to(fit_.scales.device(), at::kByte), format_.bits);
    q.scales = fit_.scales.to(at::kHalf);
    if (!format_.symmetric) q.zeros = fit_.zeros.to(at::kByte);
    return q;
  }

  IntegerFit* integer_fit() override { return rtn_.mse_clip ? nullptr : &fit_; }

 private:
  Format format_;
  RtnOptions rtn_;
  IntegerFit fit_;  // scales and zero points [rows, groups]
};

// ggml formats: each row's block is quantized by ggml's own routine (weighted by the importance
// when given), then its grid is read back from the bytes; finish() writes GPTQ's codes into the
// blocks, keeping their scales.
class GgmlGroups : public GptqGroups {
 public:
  GgmlGroups(const Format& f, int64_t rows, int64_t cols, const at::TensorOptions& dev)
      : format_(f), type_(static_cast<g::Type>(f.ggml_type)) {
    const g::TypeInfo& info = g::info(type_);
    MPQ_CHECK_VALUE(g::is_quantized(type_), "GPTQ cannot target ", f.name,
                    ": it is a plain float type");
    MPQ_CHECK_VALUE(!g::is_codebook(type_), "GPTQ cannot target ", f.name,
                    ": its codes index a codebook of 8 or 4 weights, not one weight each");
    group_size_ = info.block_size;
    grid_ = g::grid_info(type_);
    type_size_ = info.type_size;
    blocks_ = at::zeros({rows, static_cast<int64_t>(g::row_size(type_, cols))}, at::kByte);
    scale = at::zeros({rows, cols}, dev.dtype(at::kFloat));
    offset = at::zeros({rows, cols}, dev.dtype(at::kFloat));
  }

  void fit(const at::Tensor& w, int64_t c0, const at::Tensor& importance) override {
    const int64_t rows = w.size(0), n = w.size(1), k = c0 / group_size_;
    MPQ_ASSERT(n == group_size_, "ggml groups are whole blocks");
    const at::Tensor x = w.to(at::kCPU, at::kFloat).contiguous();
    at::Tensor sc = at::empty({rows, n}, at::kFloat), off = at::empty({rows, n}, at::kFloat);
    const float* qw = importance.defined() ? importance.data_ptr<float>() : nullptr;
    const int64_t row_bytes = blocks_.size(1);
    uint8_t* blocks = blocks_.data_ptr<uint8_t>();
    const float* src = x.data_ptr<float>();
    float* psc = sc.data_ptr<float>();
    float* poff = off.data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        uint8_t* block = blocks + r * row_bytes + k * type_size_;
        g::quantize_row(type_, src + r * n, block, n, qw);
        g::block_grid(type_, block, psc + r * n, poff + r * n);
      }
    });
    scale.narrow(1, c0, n).copy_(sc);
    offset.narrow(1, c0, n).copy_(off);
  }

  QuantizedTensor finish(const at::Tensor& codes, at::ScalarType dtype) override {
    const int64_t rows = codes.size(0), cols = codes.size(1);
    at::Tensor c = codes;
    if (!c.is_cpu()) {
      // Codes cross to the CPU as bytes (code - qmin fits in 8 bits): a quarter of int32's traffic.
      c = c.sub(grid_.qmin).to(at::kByte).to(at::kCPU).to(at::kInt).add_(grid_.qmin);
    }
    c = c.to(at::kInt).contiguous();
    const int32_t* pc = c.data_ptr<int32_t>();
    uint8_t* blocks = blocks_.data_ptr<uint8_t>();
    const int64_t row_bytes = blocks_.size(1);
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        g::set_row_codes(type_, blocks + r * row_bytes, cols, pc + r * cols);
      }
    });
    QuantizedTensor q;
    q.format = format_.name;
    q.rows = rows;
    q.cols = cols;
    q.dtype = dtype;
    q.codes = blocks_;
    return q;
  }

 private:
  Format format_;
  g::Type type_;
  int64_t type_size_ = 0;
  at::Tensor blocks_;  // uint8 [rows, row_bytes], CPU
};

}  // namespace

std::unique_ptr<GptqGroups> make_gptq_groups(const Format& format, int64_t rows, int64_t cols,
                                             const at::TensorOptions& device, bool mse_clip) {
  if (format.family == FormatFamily::kInteger) {
    return std::make_unique<IntegerGroups>(format, rows, cols, device, mse_clip);
  }
  return std::make_unique<GgmlGroups>(format, rows, cols, device);
}

}  // namespace mpq::detail
