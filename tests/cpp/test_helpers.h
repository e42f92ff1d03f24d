#pragma once
#include <Eigen/Dense>
#include <ATen/ATen.h>

namespace mpq_test {

using MatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A copy of a 2-D tensor as a float64 Eigen matrix (the reference side of a comparison).
inline MatrixXd to_eigen(const at::Tensor& t) {
  at::Tensor c = t.to(at::kDouble).cpu().contiguous();
  return Eigen::Map<const MatrixXd>(c.data_ptr<double>(), c.size(0), c.size(1));
}

// The devices to run on: the CPU, plus CUDA when this machine has a GPU.
inline std::vector<at::Device> devices() {
  std::vector<at::Device> d{at::kCPU};
  if (at::hasCUDA()) d.emplace_back(at::kCUDA, 0);
  return d;
}

}  // namespace mpq_test
