#include <mpq/candidates.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/error.h>

#include "core/byte_io.h"
#include "core/json.h"
#include "core/untrusted.h"

namespace mpq {

namespace json = detail::json;

namespace {
// Sizes the search also handles as doubles (bits per weight): 2^53 bytes (8 PiB) keeps them exact.
constexpr int64_t kMaxBytes = int64_t{1} << 53;
}  // namespace

CandidateTable::CandidateTable(std::vector<std::string> options) : options_(std::move(options)) {
  MPQ_CHECK_VALUE(!options_.empty(), "CandidateTable: needs at least one option");
  for (size_t i = 0; i < options_.size(); ++i) {
    MPQ_CHECK_VALUE(!options_[i].empty(), "CandidateTable: option ", i, " has an empty label");
    for (size_t j = 0; j < i; ++j) {
      MPQ_CHECK_VALUE(options_[i] != options_[j], "CandidateTable: option '", options_[i],
                      "' is listed twice");
    }
  }
}

int CandidateTable::add_tensor(const std::string& name, int64_t weights, const std::string& group) {
  MPQ_CHECK_VALUE(!options_.empty(), "CandidateTable: give the options before adding tensors");
  MPQ_CHECK_VALUE(!name.empty(), "CandidateTable: a tensor needs a name");
  MPQ_CHECK_VALUE(weights > 0, "CandidateTable: tensor '", name, "' must have weights > 0, got ",
                  weights);
  MPQ_CHECK_VALUE(weights <= kMaxBytes, "CandidateTable: tensor '", name,
                  "' must have at most 2^53 weights, got ", weights);
  MPQ_CHECK_VALUE(row_index_.count(name) == 0, "CandidateTable: tensor '", name, "' added twice");
  const int index = num_tensors();
  row_index_.emplace(name, index);
  rows_.push_back(Row{name, weights, group, std::vector<Cell>(options_.size())});
  return index;
}

const CandidateTable::Row& CandidateTable::row(int tensor) const {
  MPQ_CHECK_VALUE(tensor >= 0 && tensor < num_tensors(), "CandidateTable: tensor index ", tensor,
                  " out of range [0, ", num_tensors(), ")");
  return rows_[tensor];
}

const CandidateTable::Cell& CandidateTable::cell(int tensor, int option) const {
  row(tensor);
  MPQ_CHECK_VALUE(option >= 0 && option < num_options(), "CandidateTable: option index ", option,
                  " out of range [0, ", num_options(), ") for tensor '", rows_[tensor].name, "'");
  return rows_[tensor].cells[option];
}

CandidateTable::Cell& CandidateTable::cell(int tensor, int option) {
  return const_cast<Cell&>(std::as_const(*this).cell(tensor, option));
}

void CandidateTable::set(int tensor, int option, int64_t bytes, double proxy, double kl) {
  Cell& c = cell(tensor, option);
  const std::string& name = rows_[tensor].name;
  MPQ_CHECK_VALUE(bytes >= 0, "CandidateTable: tensor '", name, "' option '", options_[option],
                  "': bytes must be >= 0, got ", bytes);
  MPQ_CHECK_VALUE(bytes <= kMaxBytes, "CandidateTable: tensor '", name, "' option '",
                  options_[option], "': bytes must be at most 2^53, got ", bytes);
  MPQ_CHECK_VALUE(std::isfinite(proxy), "CandidateTable: tensor '", name, "' option '",
                  options_[option], "': the proxy error must be finite, got ", proxy);
  MPQ_CHECK_VALUE(!std::isinf(kl), "CandidateTable: tensor '", name, "' option '",
                  options_[option], "': KL must be finite or NaN (not measured), got ", kl);
  c = Cell{true, bytes, proxy, kl};
}

void CandidateTable::set(const std::string& tensor, const std::string& option, int64_t bytes,
                         double proxy, double kl) {
  set(tensor_index(tensor), option_index(option), bytes, proxy, kl);
}

void CandidateTable::set_kl(int tensor, int option, double kl) {
  Cell& c = cell(tensor, option);
  MPQ_CHECK_VALUE(c.available, "CandidateTable: tensor '", rows_[tensor].name, "' option '",
                  options_[option], "' is unavailable; set() it before its KL");
  MPQ_CHECK_VALUE(!std::isinf(kl), "CandidateTable: KL must be finite or NaN, got ", kl);
  c.kl = kl;
}

void CandidateTable::set_unavailable(int tensor, int option) { cell(tensor, option) = Cell{}; }

void CandidateTable::set_fixed(int64_t bytes, int64_t weights) {
  MPQ_CHECK_VALUE(bytes >= 0 && weights >= 0, "CandidateTable: fixed bytes and weights must be "
                  ">= 0, got ", bytes, " and ", weights);
  MPQ_CHECK_VALUE(bytes <= kMaxBytes && weights <= kMaxBytes, "CandidateTable: fixed bytes and "
                  "weights must be at most 2^53, got ", bytes, " and ", weights);
  fixed_bytes_ = bytes;
  fixed_weights_ = weights;
}

const std::string& CandidateTable::tensor_name(int tensor) const { return row(tensor).name; }
int64_t CandidateTable::tensor_weights(int tensor) const { return row(tensor).weights; }
const std::string& CandidateTable::tensor_group(int tensor) const { return row(tensor).group; }

int CandidateTable::tensor_index(const std::string& name) const {
  auto it = row_index_.find(name);
  MPQ_CHECK_VALUE(it != row_index_.end(), "CandidateTable: unknown tensor '", name, "'");
  return it->second;
}

int CandidateTable::option_index(const std::string& label) const {
  for (int o = 0; o < num_options(); ++o) {
    if (options_[o] == label) return o;
  }
  MPQ_CHECK_VALUE(false, "CandidateTable: unknown option '", label, "' (the table has ",
                  fmt::format("{}", fmt::join(options_, ", ")), ")");
  return -1;
}

bool CandidateTable::available(int tensor, int option) const {
  return cell(tensor, option).available;
}

int64_t CandidateTable::cell_bytes(int tensor, int option) const {
  const Cell& c = cell(tensor, option);
  MPQ_CHECK_VALUE(c.available, "CandidateTable: option '", options_[option],
                  "' is unavailable for tensor '", rows_[tensor].name, "'");
  return c.bytes;
}

double CandidateTable::cell_proxy(int tensor, int option) const {
  const Cell& c = cell(tensor, option);
  MPQ_CHECK_VALUE(c.available, "CandidateTable: option '", options_[option],
                  "' is unavailable for tensor '", rows_[tensor].name, "'");
  return c.proxy;
}

double CandidateTable::cell_kl(int tensor, int option) const {
  const Cell& c = cell(tensor, option);
  return c.available ? c.kl : std::numeric_limits<double>::quiet_NaN();
}

int64_t CandidateTable::total_weights() const {
  int64_t n = fixed_weights_;
  for (const Row& r : rows_) n = detail::checked_add(n, r.weights, "CandidateTable: the total of the weights");
  return n;
}

std::vector<std::vector<int>> CandidateTable::genes() const {
  std::vector<std::vector<int>> out;
  std::map<std::string, size_t> by_group;
  for (int t = 0; t < num_tensors(); ++t) {
    const std::string& g = rows_[t].group;
    if (g.empty()) {
      out.push_back({t});
      continue;
    }
    auto [it, fresh] = by_group.emplace(g, out.size());
    if (fresh) out.emplace_back();
    out[it->second].push_back(t);
  }
  return out;
}

std::vector<std::vector<int>> CandidateTable::gene_options() const {
  std::vector<std::vector<int>> out;
  for (const auto& gene : genes()) {
    std::vector<int>& options = out.emplace_back();
    for (int o = 0; o < num_options(); ++o) {
      bool all = true;
      for (int t : gene) all = all && rows_[t].cells[o].available;
      if (all) options.push_back(o);
    }
  }
  return out;
}

void CandidateTable::validate() const {
  MPQ_CHECK_VALUE(num_options() > 0, "CandidateTable: has no options");
  MPQ_CHECK_VALUE(num_tensors() > 0, "CandidateTable: has no tensors");
  // Every sum the search forms (a genome's bytes, the weights) is at most these: checked once here,
  // so that no sum can overflow later.
  int64_t most_bytes = fixed_bytes_, weights = fixed_weights_;
  for (const Row& r : rows_) {
    int64_t row_max = 0;
    for (const Cell& c : r.cells) row_max = c.available ? std::max(row_max, c.bytes) : row_max;
    most_bytes = detail::checked_add(most_bytes, row_max, "CandidateTable: the bytes of the largest genome");
    weights = detail::checked_add(weights, r.weights, "CandidateTable: the total of the weights");
  }
  const auto genes = this->genes();
  const auto options = gene_options();
  for (size_t g = 0; g < genes.size(); ++g) {
    if (!options[g].empty()) continue;
    const int first = genes[g][0];
    MPQ_CHECK_VALUE(genes[g].size() > 1, "CandidateTable: tensor '", rows_[first].name,
                    "' has no available option");
    std::vector<std::string> names;
    for (int t : genes[g]) names.push_back(rows_[t].name);
    MPQ_CHECK_VALUE(false, "CandidateTable: coupling group '", rows_[first].group, "' (",
                    fmt::format("{}", fmt::join(names, ", ")),
                    ") has no option available to all of its tensors");
  }
}

void CandidateTable::check_genome(const Genome& genome) const {
  MPQ_CHECK_VALUE(static_cast<int64_t>(genome.size()) == num_tensors(), "genome: has ",
                  genome.size(), " entries, the table has ", num_tensors(), " tensors");
  std::map<std::string, int> group_option;
  for (int t = 0; t < num_tensors(); ++t) {
    const int o = genome[t];
    MPQ_CHECK_VALUE(o >= 0 && o < num_options(), "genome: tensor '", rows_[t].name,
                    "' has option index ", o, ", outside [0, ", num_options(), ")");
    MPQ_CHECK_VALUE(rows_[t].cells[o].available, "genome: option '", options_[o],
                    "' is unavailable for tensor '", rows_[t].name, "'");
    if (rows_[t].group.empty()) continue;
    auto [it, fresh] = group_option.emplace(rows_[t].group, o);
    MPQ_CHECK_VALUE(fresh || it->second == o, "genome: tensor '", rows_[t].name, "' takes '",
                    options_[o], "' but its coupling group '", rows_[t].group, "' took '",
                    options_[it->second], "'");
  }
}

int64_t CandidateTable::bytes(const Genome& genome) const {
  check_genome(genome);
  int64_t total = fixed_bytes_;
  for (int t = 0; t < num_tensors(); ++t) {
    total = detail::checked_add(total, rows_[t].cells[genome[t]].bytes, "CandidateTable: a genome's bytes");
  }
  return total;
}

double CandidateTable::bits_per_weight(const Genome& genome) const {
  const int64_t b = bytes(genome);
  return 8.0 * static_cast<double>(b) / static_cast<double>(total_weights());
}

double CandidateTable::proxy(const Genome& genome) const {
  check_genome(genome);
  double total = 0;
  for (int t = 0; t < num_tensors(); ++t) total += rows_[t].cells[genome[t]].proxy;
  return total;
}

// ---------------------------------------------------------------------------------------------
// Files

std::string CandidateTable::to_json() const {
  std::string out = "{\n  \"version\": 1,\n  \"fixed_bytes\": ";
  json::write_int(out, fixed_bytes_);
  out += ",\n  \"fixed_weights\": ";
  json::write_int(out, fixed_weights_);
  out += ",\n  \"options\": [";
  for (int o = 0; o < num_options(); ++o) {
    if (o) out += ", ";
    json::write_string(out, options_[o]);
  }
  out += "],\n  \"tensors\": [";
  for (int t = 0; t < num_tensors(); ++t) {
    const Row& r = rows_[t];
    out += t ? ",\n    {\"name\": " : "\n    {\"name\": ";
    json::write_string(out, r.name);
    out += ", \"weights\": ";
    json::write_int(out, r.weights);
    out += ", \"group\": ";
    json::write_string(out, r.group);
    const char* keys[] = {", \"bytes\": [", "], \"proxy\": [", "], \"kl\": ["};
    for (int k = 0; k < 3; ++k) {
      out += keys[k];
      for (int o = 0; o < num_options(); ++o) {
        const Cell& c = r.cells[o];
        if (o) out += ", ";
        if (!c.available) out += "null";
        else if (k == 0) json::write_int(out, c.bytes);
        else json::write_double(out, k == 1 ? c.proxy : c.kl);
      }
    }
    out += "]}";
  }
  out += num_tensors() ? "\n  ]\n}\n" : "]\n}\n";
  return out;
}

CandidateTable CandidateTable::from_json(const std::string& text, const std::string& what) {
  const json::Value doc = json::parse(text, what);
  json::check_keys(doc, {"version", "fixed_bytes", "fixed_weights", "options", "tensors"}, what);
  const json::Value& version = json::member(doc, "version", what);
  MPQ_CHECK_VALUE(json::as_int(version, what) == 1, what, ": at byte ", version.offset,
                  ": unsupported version (this reader knows 1)");
  std::vector<std::string> options;
  for (const json::Value& o : json::as_array(json::member(doc, "options", what), what)) {
    options.push_back(json::as_string(o, what));
  }
  // The table's own checks name the tensor and option; prefix them with the file.
  auto in_file = [&](size_t offset, auto&& f) {
    try {
      f();
    } catch (const c10::ValueError& e) {
      MPQ_CHECK_VALUE(false, what, ": at byte ", offset, ": ", e.what_without_backtrace());
    }
  };
  CandidateTable table;
  in_file(0, [&] { table = CandidateTable(options); });
  for (const json::Value& row : json::as_array(json::member(doc, "tensors", what), what)) {
    json::check_keys(row, {"name", "weights", "group", "bytes", "proxy", "kl"}, what);
    const json::Value* group = json::find_member(row, "group");
    const std::string name = json::as_string(json::member(row, "name", what), what);
    const int64_t weights = json::as_int(json::member(row, "weights", what), what);
    const std::string group_name = group ? json::as_string(*group, what) : "";
    int t = 0;
    in_file(row.offset, [&] { t = table.add_tensor(name, weights, group_name); });
    const std::string where = what + ": tensor '" + table.rows_[t].name + "'";
    const char* keys[] = {"bytes", "proxy", "kl"};
    std::vector<const std::vector<json::Value>*> columns;
    for (const char* key : keys) {
      const json::Value& v = json::member(row, key, where);
      columns.push_back(&json::as_array(v, where));
      MPQ_CHECK_VALUE(static_cast<int>(columns.back()->size()) == table.num_options(), where,
                      ": at byte ", v.offset, ": \"", key, "\" has ", columns.back()->size(),
                      " entries for ", table.num_options(), " options");
    }
    for (int o = 0; o < table.num_options(); ++o) {
      const json::Value& b = (*columns[0])[o];
      if (b.is_null()) continue;  // unavailable
      const json::Value& p = (*columns[1])[o];
      MPQ_CHECK_VALUE(!p.is_null(), where, ": at byte ", p.offset, ": option '", options[o],
                      "' has bytes but no proxy error");
      const int64_t bytes = json::as_int(b, where);
      const double proxy = json::as_double(p, where), kl = json::as_double((*columns[2])[o], where);
      in_file(b.offset, [&] { table.set(t, o, bytes, proxy, kl); });
    }
  }
  const auto* fb = json::find_member(doc, "fixed_bytes");
  const auto* fw = json::find_member(doc, "fixed_weights");
  const int64_t fixed_bytes = fb ? json::as_int(*fb, what) : 0;
  const int64_t fixed_weights = fw ? json::as_int(*fw, what) : 0;
  in_file(0, [&] {
    table.set_fixed(fixed_bytes, fixed_weights);
    table.validate();
  });
  return table;
}

void CandidateTable::save(const std::string& path) const {
  const std::string text = to_json();
  detail::write_file_atomic(path, std::vector<char>(text.begin(), text.end()),
                            "CandidateTable.save");
}

CandidateTable CandidateTable::load(const std::string& path) {
  const std::vector<char> bytes = detail::read_file(path, "CandidateTable.load");
  return from_json(std::string(bytes.begin(), bytes.end()), path);
}

std::string CandidateTable::to_string() const {
  return fmt::format("CandidateTable(tensors={}, genes={}, options=[{}], fixed_bytes={}, "
                     "fixed_weights={})",
                     num_tensors(), genes().size(), fmt::join(options_, ", "), fixed_bytes_,
                     fixed_weights_);
}

}  // namespace mpq
