#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include <mpq/calibration.h>
#include <mpq/error.h>

#include "test_helpers.h"

TEST(Calibrator, SumsMatchFloat64Reference) {
  for (const at::Device& device : mpq_test::devices()) {
    at::manual_seed(0);
    const at::Tensor x = at::randn({3, 50, 24}, at::TensorOptions().device(device));
    mpq::CalibratorOptions o;
    o.accumulate_dtype = at::kDouble;
    mpq::Calibrator cal(o);
    cal.observe("blk.0.attn_q", x.narrow(1, 0, 20));
    cal.observe("blk.0.attn_q", x.narrow(1, 20, 30));
    const mpq::LayerStats s = cal.stats("blk.0.attn_q");

    const mpq_test::MatrixXd rows = mpq_test::to_eigen(x.reshape({-1, 24}));
    const mpq_test::MatrixXd xtx = rows.transpose() * rows;
    EXPECT_LT((mpq_test::to_eigen(s.xtx) - xtx).cwiseAbs().maxCoeff(), 1e-9);
    EXPECT_LT((mpq_test::to_eigen(s.hessian()) - xtx * (2.0 / 150)).cwiseAbs().maxCoeff(), 1e-9);
    const mpq_test::MatrixXd sum_sq = rows.array().square().colwise().sum();
    const mpq_test::MatrixXd sum_abs = rows.array().abs().colwise().sum();
    const mpq_test::MatrixXd max_abs = rows.array().abs().colwise().maxCoeff();
    EXPECT_LT((mpq_test::to_eigen(s.sum_sq.unsqueeze(0)) - sum_sq).cwiseAbs().maxCoeff(), 1e-9);
    EXPECT_LT((mpq_test::to_eigen(s.sum_abs.unsqueeze(0)) - sum_abs).cwiseAbs().maxCoeff(), 1e-9);
    EXPECT_LT((mpq_test::to_eigen(s.max_abs.unsqueeze(0)) - max_abs).cwiseAbs().maxCoeff(), 1e-12);
    EXPECT_EQ(s.tokens, 150);
    EXPECT_EQ(s.batches, 2);
  }
}

TEST(Calibrator, ConcurrentObserversLoseNothing) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({8, 64, 16}, at::kDouble);
  mpq::CalibratorOptions o;
  o.accumulate_dtype = at::kDouble;
  mpq::Calibrator cal(o);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int layer = 0; layer < 4; ++layer) cal.observe("l" + std::to_string(layer), x[t]);
    });
  }
  for (auto& th : threads) th.join();
  const mpq_test::MatrixXd rows = mpq_test::to_eigen(x.reshape({-1, 16}));
  for (int layer = 0; layer < 4; ++layer) {
    const mpq::LayerStats s = cal.stats("l" + std::to_string(layer));
    EXPECT_EQ(s.tokens, 512);
    EXPECT_LT((mpq_test::to_eigen(s.xtx) - rows.transpose() * rows).cwiseAbs().maxCoeff(), 1e-9);
  }
  EXPECT_EQ(cal.layers().size(), 4u);
}

TEST(Calibrator, SaveLoadRoundTrip) {
  mpq::Calibrator cal;
  cal.observe("blk.1.ffn_down", at::randn({10, 172}));
  cal.observe("blk.0.attn_q", at::randn({10, 64}));
  const std::string path = ::testing::TempDir() + "/mpq_cal_test.pt";
  cal.save(path);
  const mpq::Calibrator back = mpq::Calibrator::load(path);
  EXPECT_EQ(back.layers(), cal.layers());
  for (const std::string& name : cal.layers()) {
    EXPECT_TRUE(at::equal(back.stats(name).xtx, cal.stats(name).xtx));
    EXPECT_TRUE(at::equal(back.stats(name).max_abs, cal.stats(name).max_abs));
    EXPECT_EQ(back.stats(name).tokens, 10);
  }
  std::remove(path.c_str());
}

TEST(Calibrator, BadInputIsRejected) {
  mpq::Calibrator cal;
  cal.observe("a", at::randn({4, 8}));
  EXPECT_THROW(cal.observe("a", at::randn({4, 9})), c10::ValueError);  // in_features changed
  at::Tensor nan = at::randn({4, 8});
  nan[0][0] = NAN;
  EXPECT_THROW(cal.observe("a", nan), c10::ValueError);
  EXPECT_THROW(cal.observe("a", at::ones({4, 8}, at::kInt)), c10::TypeError);
  EXPECT_THROW(cal.stats("never"), c10::ValueError);
  EXPECT_EQ(cal.stats("a").tokens, 4);  // failed observations changed nothing

  EXPECT_THROW(mpq::Calibrator::load("/nonexistent/file.pt"), mpq::IoError);
  const std::string path = ::testing::TempDir() + "/mpq_cal_garbage.pt";
  {
    std::ofstream f(path, std::ios::binary);
    f << "this is not a calibration file";
  }
  EXPECT_THROW(mpq::Calibrator::load(path), c10::ValueError);
  std::remove(path.c_str());
  mpq::CalibratorOptions o;
  o.accumulate_dtype = at::kHalf;
  EXPECT_THROW(mpq::Calibrator{o}, c10::ValueError);
}
