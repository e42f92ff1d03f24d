#pragma once
// llama.cpp's importance matrix: per weight matrix, Σx² of each input column over the calibration
// tokens, and the token count. Consumers quantize with importance = Σx² / count per column.
// Files: the GGUF format of llama-imatrix (general.type = "imatrix", tensors <name>.in_sum2 and
// <name>.counts, keys imatrix.datasets / chunk_count / chunk_size) and the legacy .dat format.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <mpq/calibration.h>

namespace mpq {

struct ImatrixEntry {
  std::vector<float> in_sum2;  // Σx² per input column
  int64_t count = 0;           // tokens (rows) summed; legacy files: their call count
};

struct Imatrix {
  std::map<std::string, ImatrixEntry> entries;  // keyed by GGUF tensor name, "blk.0.attn_q.weight"
  std::vector<std::string> datasets;
  int32_t chunk_count = 0;
  int32_t chunk_size = 0;

  // The importance weights llama-quantize passes to ggml: in_sum2 / count (all ones when count is
  // 0). ValueError naming the tensor if it has no entry.
  std::vector<float> importance(const std::string& tensor) const;

  // Entries from a Calibrator: every layer whose name starts with "blk." (plus "output" when
  // include_output), named layer + ".weight", with its imatrix sums (batches of >= 16 rows).
  static Imatrix from_calibrator(const Calibrator& calibrator, int32_t chunk_size,
                                 std::vector<std::string> datasets = {},
                                 bool include_output = false);

  void save(const std::string& path) const;         // GGUF, as llama-imatrix writes it
  void save_legacy(const std::string& path) const;  // the .dat format of older llama-imatrix
  // Either format (detected from the file's first bytes).
  static Imatrix load(const std::string& path);
};

}  // namespace mpq
