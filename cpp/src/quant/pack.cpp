// Bit packing of integer codes, in ATen ops so it runs on any device.
#include <ATen/ATen.h>

#include <mpq/error.h>
#include <mpq/quantizer.h>

#include "core/checks.h"

namespace mpq {
namespace {

void check_bits(int bits, const char* fn) {
  MPQ_CHECK_VALUE(bits >= 1 && bits <= 8, fn, ": bits must be in 1..8, got ", bits);
}

// 2^k for k < count, as int32 on `device`.
at::Tensor powers_of_two(int64_t count, const at::Device& device) {
  return at::pow(2, at::arange(count, at::TensorOptions().dtype(at::kInt).device(device)));
}

}  // namespace

at::Tensor pack_codes(const at::Tensor& codes, int bits) {
  check_bits(bits, "pack_codes");
  MPQ_CHECK_TYPE(codes.defined() && codes.scalar_type() == at::kByte,
                 "pack_codes: codes must be a uint8 tensor, got ", detail::describe(codes));
  MPQ_CHECK_VALUE(codes.dim() == 2, "pack_codes: codes must be 2-D [rows, n], got ",
                  detail::describe(codes));
  const int64_t rows = codes.size(0), n = codes.size(1);
  if (codes.numel() > 0 && bits < 8 && codes.max().item<int>() >= (1 << bits)) {
    const int64_t too_big = codes.ge(1 << bits).sum().item<int64_t>();
    MPQ_CHECK_VALUE(too_big == 0, "pack_codes: ", too_big, " codes do not fit in ", bits, " bits");
  }
  const int64_t nbytes = (n * bits + 7) / 8;
  if (8 % bits == 0 && (n * bits) % 8 == 0) {
    // Whole codes per byte (the common 2-, 4- and 8-bit rows): code k of a byte lands at bit
    // k * bits, the same stream as below in a few byte-wide passes.
    const int64_t per_byte = 8 / bits;
    const at::Tensor c = codes.reshape({rows, nbytes, per_byte});
    at::Tensor out = c.select(2, 0).clone();
    for (int64_t k = 1; k < per_byte; ++k) {
      out.bitwise_or_(at::bitwise_left_shift(c.select(2, k), k * bits));
    }
    return out;
  }
  // codes -> bits [rows, n * bits] -> padded to whole bytes -> weighted sum per byte.
  at::Tensor shifts = at::arange(bits, codes.options().dtype(at::kInt));
  at::Tensor stream = at::bitwise_and(at::bitwise_right_shift(codes.to(at::kInt).unsqueeze(-1), shifts), 1)
                          .reshape({rows, n * bits});
  stream = at::constant_pad_nd(stream, {0, nbytes * 8 - n * bits}, 0);
  return stream.reshape({rows, nbytes, 8})
      .mul(powers_of_two(8, codes.device()))
      .sum(-1)
      .to(at::kByte);
}

at::Tensor unpack_codes(const at::Tensor& packed, int bits, int64_t n) {
  check_bits(bits, "unpack_codes");
  MPQ_CHECK_TYPE(packed.defined() && packed.scalar_type() == at::kByte,
                 "unpack_codes: packed must be a uint8 tensor, got ", detail::describe(packed));
  MPQ_CHECK_VALUE(packed.dim() == 2, "unpack_codes: packed must be 2-D [rows, bytes], got ",
                  detail::describe(packed));
  MPQ_CHECK_VALUE(n >= 0, "unpack_codes: n must be >= 0, got ", n);
  const int64_t rows = packed.size(0), nbytes = (n * bits + 7) / 8;
  MPQ_CHECK_VALUE(packed.size(1) == nbytes, "unpack_codes: ", n, " codes of ", bits,
                  " bits take ", nbytes, " bytes per row, but packed has ", packed.size(1));
  at::Tensor shifts = at::arange(8, packed.options().dtype(at::kInt));
  at::Tensor stream = at::bitwise_and(at::bitwise_right_shift(packed.to(at::kInt).unsqueeze(-1), shifts), 1)
                          .reshape({rows, nbytes * 8})
                          .narrow(1, 0, n * bits);
  return stream.reshape({rows, n, bits})
      .mul(powers_of_two(bits, packed.device()))
      .sum(-1)
      .to(at::kByte);
}

}  // namespace mpq
