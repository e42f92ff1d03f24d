// Quantizes a random weight with libmpq and reports the error: the C++ quickstart of the README.
#include <iostream>

#include <ATen/ATen.h>
#include <mpq/mpq.h>

int main() {
  const at::Tensor weight = at::randn({256, 512});
  const mpq::Format format = mpq::find_format("int4_g32");
  const mpq::QuantizedTensor q = mpq::quantize_rtn(weight, format);
  const at::Tensor restored = mpq::dequantize(q);
  const double rel = ((restored - weight).square().sum() / weight.square().sum()).item<double>();
  std::cout << q.to_string() << "\n"
            << "bits/weight " << format.bits_per_weight(512) << ", relative error " << rel << "\n";
  try {
    mpq::find_format("int9");
  } catch (const c10::ValueError& e) {
    std::cout << "bad input is reported: " << e.what_without_backtrace() << "\n";
  }
  return rel < 0.02 ? 0 : 1;
}
