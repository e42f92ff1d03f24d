#pragma once
// A CandidateTable is what the search chooses from: for every quantizable tensor of a model (a row)
// and every quantization option (a column, e.g. "gptq:q4_k"), the bytes the tensor takes in the
// exported file and the error that choice costs. A genome picks one option per tensor; the table
// prices it. Tensors outside the search (norms, ...) still count towards the file's size and
// bits per weight through fixed_bytes / fixed_weights.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace mpq {

// One option index per tensor (row order of the table).
using Genome = std::vector<int>;

class CandidateTable {
 public:
  CandidateTable() = default;
  // Options are column labels, unique and non-empty, e.g. {"rtn:q8_0", "gptq:q4_k"}.
  explicit CandidateTable(std::vector<std::string> options);

  // Adds a row with every option unavailable; returns its index. `weights` > 0. Tensors that
  // share a non-empty `group` must always take the same option (e.g. an AWQ scale folded into
  // the RMSNorm in front of q/k/v is one transform for all three).
  int add_tensor(const std::string& name, int64_t weights, const std::string& group = "");
  // Makes an option available to a tensor: its bytes in the file (>= 0), its proxy error (finite;
  // e.g. tr(dW H dW^T), possibly normalized by the caller) and its measured KL (NaN: not measured).
  void set(int tensor, int option, int64_t bytes, double proxy, double kl);
  void set(const std::string& tensor, const std::string& option, int64_t bytes, double proxy,
           double kl);
  void set_kl(int tensor, int option, double kl);  // the cell must be available
  void set_unavailable(int tensor, int option);
  // Tensors of the file outside the search: their bytes and weights.
  void set_fixed(int64_t bytes, int64_t weights);

  int num_tensors() const { return static_cast<int>(rows_.size()); }
  int num_options() const { return static_cast<int>(options_.size()); }
  const std::vector<std::string>& options() const { return options_; }
  const std::string& tensor_name(int tensor) const;
  int64_t tensor_weights(int tensor) const;
  const std::string& tensor_group(int tensor) const;
  // Throw ValueError naming the unknown tensor or option (listing the options).
  int tensor_index(const std::string& name) const;
  int option_index(const std::string& label) const;

  bool available(int tensor, int option) const;
  // The cell's values; bytes and proxy throw ValueError for an unavailable cell.
  int64_t cell_bytes(int tensor, int option) const;
  double cell_proxy(int tensor, int option) const;
  double cell_kl(int tensor, int option) const;

  int64_t fixed_bytes() const { return fixed_bytes_; }
  int64_t fixed_weights() const { return fixed_weights_; }
  // Every weight of the file: the searched tensors' plus fixed_weights.
  int64_t total_weights() const;

  // The coupling groups as the search sees them: each a list of tensor indices (an ungrouped
  // tensor is a group of its own), in order of their first tensor; and for each group the options
  // available to all of its tensors.
  std::vector<std::vector<int>> genes() const;
  std::vector<std::vector<int>> gene_options() const;

  // Checks the table is searchable: at least one tensor and option, and every coupling group has
  // an option available to all its tensors. Throws ValueError naming the tensor or group.
  void validate() const;
  // Throws ValueError when `genome` has the wrong length, an index out of range, an unavailable
  // cell or splits a coupling group (naming the tensor).
  void check_genome(const Genome& genome) const;

  // Prices of a genome (checked first). bytes includes fixed_bytes; bits_per_weight is
  // 8 * bytes / total_weights, every tensor of the file counted; proxy is the sum of the cells'.
  int64_t bytes(const Genome& genome) const;
  double bits_per_weight(const Genome& genome) const;
  double proxy(const Genome& genome) const;

  // {"version": 1, "fixed_bytes": B, "fixed_weights": W, "options": [label, ...],
  //  "tensors": [{"name": ..., "weights": N, "group": ..., "bytes": [b | null, ...],
  //               "proxy": [p | null, ...], "kl": [k | null, ...]}, ...]}
  // One array entry per option; null bytes = unavailable, null kl = not measured.
  std::string to_json() const;
  // Reads what to_json writes; throws ValueError naming `what`, the byte offset and the rule.
  static CandidateTable from_json(const std::string& json, const std::string& what = "table JSON");
  // Atomic write (temporary name, then rename); load names the file in its errors.
  void save(const std::string& path) const;
  static CandidateTable load(const std::string& path);

  std::string to_string() const;

 private:
  struct Cell {
    bool available = false;
    int64_t bytes = 0;
    double proxy = 0;
    double kl = 0;
  };
  struct Row {
    std::string name;
    int64_t weights = 0;
    std::string group;
    std::vector<Cell> cells;
  };
  const Row& row(int tensor) const;  // range-checked
  const Cell& cell(int tensor, int option) const;
  Cell& cell(int tensor, int option);

  std::vector<std::string> options_;
  std::vector<Row> rows_;
  std::unordered_map<std::string, int> row_index_;
  int64_t fixed_bytes_ = 0;
  int64_t fixed_weights_ = 0;
};

}  // namespace mpq
