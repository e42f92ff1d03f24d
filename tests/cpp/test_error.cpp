#include <gtest/gtest.h>

#include <mpq/error.h>

TEST(Error, ValueCheckThrowsValueErrorWithMessage) {
  try {
    MPQ_CHECK_VALUE(1 == 2, "blk.3.attn_q: rows must be ", 4);
    FAIL() << "no exception";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("blk.3.attn_q: rows must be 4"),
              std::string::npos);
  }
}

TEST(Error, TypeCheckThrowsTypeError) {
  EXPECT_THROW(MPQ_CHECK_TYPE(false, "x"), c10::TypeError);
  EXPECT_NO_THROW(MPQ_CHECK_TYPE(true, "x"));
}

TEST(Error, IoCheckThrowsIoError) {
  EXPECT_THROW(MPQ_CHECK_IO(false, "file ", "a.gguf"), mpq::IoError);
}

TEST(Error, AssertThrowsInsteadOfAborting) {
  EXPECT_THROW(MPQ_ASSERT(false, "invariant"), c10::Error);
}
