#include <mpq/gguf.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <mpq/error.h>

#include "core/byte_io.h"
#include "core/untrusted.h"
#include "ggml/ggml_types.h"

namespace mpq::gguf {
namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr size_t kMaxNameLength = 63;    // GGML_MAX_NAME - 1: llama.cpp rejects longer names
constexpr int kMaxArrayDepth = 4;        // nesting limit: bounds the reader's recursion
constexpr uint64_t kMaxString = uint64_t{1} << 30;

uint64_t pad_to(uint64_t x, uint64_t alignment) { return (x + alignment - 1) / alignment * alignment; }

// Sequential, bounds-checked reads from a file: every length is checked against the file's size
// before anything is allocated.
class FileCursor {
 public:
  explicit FileCursor(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    MPQ_CHECK_IO(in_.good(), "GGUF: cannot open ", path);
    in_.seekg(0, std::ios::end);
    size_ = static_cast<uint64_t>(in_.tellg());
    in_.seekg(0);
  }
  void read(void* dst, uint64_t n) {
    need(n);
    in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    MPQ_CHECK_IO(in_.good(), "GGUF ", path_, ": read error at offset ", pos_);
    pos_ += n;
  }
  template <typename T>
  T get() {
    T v;
    read(&v, sizeof(T));
    return v;
  }
  std::string string() {
    const auto n = get<uint64_t>();
    MPQ_CHECK_VALUE(n <= kMaxString, "GGUF ", path_, ": corrupt string length ", n, " at offset ",
                    pos_ - 8);
    need(n);
    std::string s(n, '\0');
    read(s.data(), n);
    return s;
  }
  // A key or tensor name: valid UTF-8, checked here so that no later use (Python's str) fails.
  std::string name(const char* kind) {
    const uint64_t at = pos_;
    std::string s = string();
    detail::check_utf8(s, kind, "GGUF " + path_ + ": at offset " + std::to_string(at));
    return s;
  }
  void need(uint64_t n) const {
    MPQ_CHECK_VALUE(n <= size_ - pos_, "GGUF ", path_, ": truncated or corrupt: needs ", n,
                    " bytes at offset ", pos_, " of ", size_);
  }
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0, pos_ = 0;
};

uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::kUint8: case ValueType::kInt8: case ValueType::kBool: return 1;
    case ValueType::kUint16: case ValueType::kInt16: return 2;
    case ValueType::kUint32: case ValueType::kInt32: case ValueType::kFloat32: return 4;
    case ValueType::kUint64: case ValueType::kInt64: case ValueType::kFloat64: return 8;
    case ValueType::kString: return 8;
    case ValueType::kArray: return 12;
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

// A bool stored as one byte, 0 or 1.
bool read_bool(FileCursor& c) {
  const auto b = c.get<uint8_t>();
  MPQ_CHECK_VALUE(b <= 1, "GGUF ", c.path(), ": bool value ", int(b), " at offset ", c.pos() - 1);
  return b == 1;
}

Array read_array(FileCursor& c, int depth, detail::MemoryBudget& budget, const std::string& key);

Value read_value(FileCursor& c, ValueType type, int depth, detail::MemoryBudget& budget,
                 const std::string& key) {
  Value out;
  switch (type) {
    case ValueType::kUint8: out.v = c.get<uint8_t>(); break;
    case ValueType::kInt8: out.v = c.get<int8_t>(); break;
    case ValueType::kUint16: out.v = c.get<uint16_t>(); break;
    case ValueType::kInt16: out.v = c.get<int16_t>(); break;
    case ValueType::kUint32: out.v = c.get<uint32_t>(); break;
    case ValueType::kInt32: out.v = c.get<int32_t>(); break;
    case ValueType::kFloat32: out.v = c.get<float>(); break;
    case ValueType::kUint64: out.v = c.get<uint64_t>(); break;
    case ValueType::kInt64: out.v = c.get<int64_t>(); break;
    case ValueType::kFloat64: out.v = c.get<double>(); break;
    case ValueType::kBool: out.v = read_bool(c); break;
    case ValueType::kString: {
      std::string s = c.string();
      budget.charge(s.size());
      out.v = std::move(s);
      break;
    }
    case ValueType::kArray: out.v = read_array(c, depth, budget, key); break;
  }
  return out;
}

Array read_array(FileCursor& c, int depth, detail::MemoryBudget& budget, const std::string& key) {
  const std::string what = "GGUF " + c.path() + ": key '" + key + "'";
  MPQ_CHECK_VALUE(depth < kMaxArrayDepth, what, ": arrays nested deeper than ", kMaxArrayDepth,
                  " at offset ", c.pos());
  const auto et = c.get<uint32_t>();
  MPQ_CHECK_VALUE(valid_type(et), what, ": invalid array element type ", et, " at offset ",
                  c.pos() - 4);
  const auto n = c.get<uint64_t>();
  Array a = Array::of(static_cast<ValueType>(et));
  // Enough bytes must remain for n elements before anything is allocated for them.
  detail::check_count_fits(n, min_encoded_size(a.type()), c.remaining(),
                           what + ": array at offset " + std::to_string(c.pos() - 12));
  std::visit(
      [&](auto& items) {
        using T = typename std::decay_t<decltype(items)>::value_type;
        if constexpr (std::is_same_v<T, bool>) {
          budget.charge(n / 8 + 1);
          items.resize(n);
          for (uint64_t i = 0; i < n; ++i) items[i] = read_bool(c);
        } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, Array>) {
          budget.charge(detail::checked_mul(n, sizeof(T), what));
          items.reserve(n);
          for (uint64_t i = 0; i < n; ++i) {
            if constexpr (std::is_same_v<T, std::string>) {
              items.push_back(c.string());
              budget.charge(items.back().size());
            } else {
              items.push_back(read_array(c, depth + 1, budget, key));
            }
          }
        } else {
          budget.charge(n * sizeof(T));  // n * sizeof(T) <= the bytes left in the file
          items.resize(n);
          c.read(items.data(), n * sizeof(T));
        }
      },
      a.items);
  return a;
}

void write_raw(std::vector<char>& out, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  out.insert(out.end(), c, c + n);
}

void write_string(std::vector<char>& out, const std::string& s) {
  const uint64_t n = s.size();
  write_raw(out, &n, 8);
  write_raw(out, s.data(), n);
}

void write_array(std::vector<char>& out, const Array& a) {
  const auto t = static_cast<uint32_t>(a.type());
  const uint64_t n = a.size();
  write_raw(out, &t, 4);
  write_raw(out, &n, 8);
  std::visit(
      [&](const auto& items) {
        using T = typename std::decay_t<decltype(items)>::value_type;
        if constexpr (std::is_same_v<T, bool>) {
          for (bool b : items) out.push_back(b ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::string>) {
          for (const std::string& s : items) write_string(out, s);
        } else if constexpr (std::is_same_v<T, Array>) {
          for (const Array& inner : items) write_array(out, inner);
        } else {
          write_raw(out, items.data(), items.size() * sizeof(T));
        }
      },
      a.items);
}

void write_value(std::vector<char>& out, const Value& value) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          write_string(out, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          write_array(out, x);
        } else if constexpr (std::is_same_v<T, bool>) {
          out.push_back(x ? 1 : 0);
        } else {
          write_raw(out, &x, sizeof(x));
        }
      },
      value.v);
}

}  // namespace

const char* to_string(ValueType type) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool", "string", "array", "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(type);
  return i < 13 ? names[i] : "invalid";
}

ValueType Value::type() const {
  // The variant's alternatives are listed in GGUF type order.
  return static_cast<ValueType>(v.index());
}

double Value::as_double() const {
  return std::visit(
      [&](const auto& x) -> double {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_arithmetic_v<T>) {
          return static_cast<double>(x);
        } else {
          MPQ_CHECK_VALUE(false, "GGUF: expected a number, got a ", to_string(type()));
          return 0;
        }
      },
      v);
}

int64_t Value::as_int() const {
  return std::visit(
      [&](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T>) {
          return static_cast<int64_t>(x);
        } else {
          MPQ_CHECK_VALUE(false, "GGUF: expected an integer, got a ", to_string(type()));
          return 0;
        }
      },
      v);
}

const std::string& Value::as_string() const {
  MPQ_CHECK_VALUE(std::holds_alternative<std::string>(v), "GGUF: expected a string, got a ",
                  to_string(type()));
  return std::get<std::string>(v);
}

const Array& Value::as_array() const {
  MPQ_CHECK_VALUE(std::holds_alternative<Array>(v), "GGUF: expected an array, got a ",
                  to_string(type()));
  return std::get<Array>(v);
}

Array Array::of(ValueType type) {
  Array a;
  switch (type) {
    case ValueType::kUint8: a.items.emplace<0>(); break;
    case ValueType::kInt8: a.items.emplace<1>(); break;
    case ValueType::kUint16: a.items.emplace<2>(); break;
    case ValueType::kInt16: a.items.emplace<3>(); break;
    case ValueType::kUint32: a.items.emplace<4>(); break;
    case ValueType::kInt32: a.items.emplace<5>(); break;
    case ValueType::kFloat32: a.items.emplace<6>(); break;
    case ValueType::kBool: a.items.emplace<7>(); break;
    case ValueType::kString: a.items.emplace<8>(); break;
    case ValueType::kArray: a.items.emplace<9>(); break;
    case ValueType::kUint64: a.items.emplace<10>(); break;
    case ValueType::kInt64: a.items.emplace<11>(); break;
    case ValueType::kFloat64: a.items.emplace<12>(); break;
  }
  MPQ_CHECK_VALUE(a.type() == type, "GGUF: invalid array element type ", static_cast<uint32_t>(type));
  return a;
}

size_t Array::size() const {
  return std::visit([](const auto& items) { return items.size(); }, items);
}

Value Array::at(size_t i) const {
  MPQ_CHECK_VALUE(i < size(), "GGUF: index ", i, " of an array of ", size(), " ", to_string(type()));
  return std::visit([&](const auto& items) -> Value {
    using T = typename std::decay_t<decltype(items)>::value_type;
    return Value{T(items[i])};
  }, items);
}

template <typename T>
const std::vector<T>& Array::as() const {
  const auto* v = std::get_if<std::vector<T>>(&items);
  MPQ_CHECK_VALUE(v != nullptr, "GGUF: expected an array of ", to_string(Array{std::vector<T>{}}.type()),
                  ", got an array of ", to_string(type()));
  return *v;
}

template const std::vector<uint8_t>& Array::as() const;
template const std::vector<int8_t>& Array::as() const;
template const std::vector<uint16_t>& Array::as() const;
template const std::vector<int16_t>& Array::as() const;
template const std::vector<uint32_t>& Array::as() const;
template const std::vector<int32_t>& Array::as() const;
template const std::vector<float>& Array::as() const;
template const std::vector<bool>& Array::as() const;
template const std::vector<std::string>& Array::as() const;
template const std::vector<Array>& Array::as() const;
template const std::vector<uint64_t>& Array::as() const;
template const std::vector<int64_t>& Array::as() const;
template const std::vector<double>& Array::as() const;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // tensor_nbytes checked that the product fits
  return n;
}

uint64_t tensor_nbytes(uint32_t type, const std::vector<int64_t>& shape, const std::string& name) {
  namespace g = mpq::detail::ggml;
  const std::string what = "GGUF tensor " + name;
  MPQ_CHECK_VALUE(g::is_supported(static_cast<g::Type>(type)), what, ": ggml type ", type,
                  " is not supported by mpq");
  MPQ_CHECK_VALUE(!shape.empty() && shape.size() <= kMaxDims, what, ": ", shape.size(),
                  " dimensions (1..", kMaxDims, " allowed)");
  const g::TypeInfo& info = g::info(static_cast<g::Type>(type));
  uint64_t numel = 1;
  for (int64_t d : shape) {
    MPQ_CHECK_VALUE(d >= 0, what, ": negative dimension ", d);
    numel = detail::checked_mul(numel, static_cast<uint64_t>(d), what + ": element count");
  }
  MPQ_CHECK_VALUE(shape[0] % info.block_size == 0, what, ": row length ", shape[0],
                  " is not a multiple of ", info.name, "'s block of ", info.block_size);
  const uint64_t nbytes = detail::checked_mul(numel / static_cast<uint64_t>(info.block_size),
                                              static_cast<uint64_t>(info.type_size), what + ": byte count");
  // Sizes become int64 (torch, file offsets): anything larger cannot be real.
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  MPQ_CHECK_VALUE(numel <= kMax && nbytes <= kMax, what, ": ", numel, " elements (", nbytes,
                  " bytes) exceed int64");
  return nbytes;
}

// ------------------------------------------------------------------ Reader

struct Reader::Impl {
  std::string path;
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  uint64_t file_size = 0;
  std::vector<std::pair<std::string, Value>> metadata;
  std::map<std::string, size_t> key_index;
  std::vector<TensorInfo> tensors;
  std::map<std::string, size_t> tensor_index;
};

Reader::Reader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  FileCursor c(path);
  m.file_size = c.size();
  char magic[4];
  c.read(magic, 4);
  MPQ_CHECK_VALUE(std::memcmp(magic, kMagic, 4) == 0, "GGUF ", path, ": not a GGUF file (bad magic)");
  m.version = c.get<uint32_t>();
  MPQ_CHECK_VALUE(m.version == 2 || m.version == 3, "GGUF ", path, ": version ", m.version,
                  " is not supported (2 and 3 are)");
  const auto n_tensors = c.get<uint64_t>(), n_kv = c.get<uint64_t>();
  // Each KV takes at least 8 + 1 + 4 + 1 bytes, each tensor info at least 8 + 1 + 4 + 8 + 4 + 8.
  const std::string what = "GGUF " + path;
  detail::check_count_fits(n_kv, 14, c.remaining(), what + ": metadata key count");
  detail::check_count_fits(n_tensors, 33, c.remaining(), what + ": tensor count");
  detail::MemoryBudget budget(c.size(), what);
  // What the metadata and tensor lists and their name indices keep per entry, besides names.
  constexpr uint64_t kEntry = sizeof(std::pair<std::string, Value>) + 96;
  constexpr uint64_t kTensorEntry = sizeof(TensorInfo) + 96;

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.name("key");
    MPQ_CHECK_VALUE(!key.empty(), what, ": empty key at index ", i);
    MPQ_CHECK_VALUE(!m.key_index.count(key), what, ": duplicate key '", key, "'");
    budget.charge(kEntry + 2 * key.size());
    const auto t = c.get<uint32_t>();
    MPQ_CHECK_VALUE(valid_type(t), what, ": key '", key, "' has invalid type ", t);
    Value v = read_value(c, static_cast<ValueType>(t), 0, budget, key);
    m.key_index[key] = m.metadata.size();
    m.metadata.emplace_back(std::move(key), std::move(v));
  }
  if (const Value* a = find("general.alignment")) {
    MPQ_CHECK_VALUE(a->type() == ValueType::kUint32, what, ": general.alignment must be a uint32");
    const uint32_t al = std::get<uint32_t>(a->v);
    MPQ_CHECK_VALUE(al > 0 && (al & (al - 1)) == 0, what, ": general.alignment ", al,
                    " is not a power of two");
    m.alignment = al;
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo ti;
    ti.name = c.name("tensor name");
    MPQ_CHECK_VALUE(!ti.name.empty() && ti.name.size() <= 1024, what, ": tensor ", i,
                    " has an invalid name length ", ti.name.size());
    MPQ_CHECK_VALUE(!m.tensor_index.count(ti.name), what, ": duplicate tensor '", ti.name, "'");
    budget.charge(kTensorEntry + 2 * ti.name.size());
    const auto n_dims = c.get<uint32_t>();
    MPQ_CHECK_VALUE(n_dims >= 1 && n_dims <= kMaxDims, what, ": tensor ", ti.name, " has ",
                    n_dims, " dimensions");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = c.get<uint64_t>();
      MPQ_CHECK_VALUE(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what,
                      ": tensor ", ti.name, " has dimension ", dim);
      ti.shape.push_back(static_cast<int64_t>(dim));
    }
    ti.type = c.get<uint32_t>();
    ti.offset = c.get<uint64_t>();
    ti.nbytes = tensor_nbytes(ti.type, ti.shape, ti.name + " (in " + path + ")");
    m.tensor_index[ti.name] = m.tensors.size();
    m.tensors.push_back(std::move(ti));
  }
  m.data_offset = pad_to(c.pos(), m.alignment);
  MPQ_CHECK_VALUE(m.data_offset <= m.file_size || m.tensors.empty(), "GGUF ", path,
                  ": truncated before the data section");
  const uint64_t data_size = m.file_size > m.data_offset ? m.file_size - m.data_offset : 0;

  // Every tensor lies inside the data section, aligned, and no two overlap.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : m.tensors) {
    MPQ_CHECK_VALUE(t.offset % m.alignment == 0, "GGUF ", path, ": tensor ", t.name, " offset ",
                    t.offset, " is not aligned to ", m.alignment);
    MPQ_CHECK_VALUE(t.offset <= data_size && t.nbytes <= data_size - t.offset, "GGUF ", path,
                    ": tensor ", t.name, " (", t.nbytes, " bytes at data offset ", t.offset,
                    ") extends past the end of the file (truncated?)");
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    MPQ_CHECK_VALUE(by_offset[i - 1]->offset + by_offset[i - 1]->nbytes <= by_offset[i]->offset,
                    "GGUF ", path, ": tensors ", by_offset[i - 1]->name, " and ", by_offset[i]->name,
                    " overlap");
  }
}

Reader::~Reader() = default;
Reader::Reader(Reader&&) noexcept = default;
Reader& Reader::operator=(Reader&&) noexcept = default;

const std::string& Reader::path() const { return impl_->path; }
uint32_t Reader::version() const { return impl_->version; }
uint32_t Reader::alignment() const { return impl_->alignment; }
uint64_t Reader::data_offset() const { return impl_->data_offset; }
const std::vector<std::pair<std::string, Value>>& Reader::metadata() const { return impl_->metadata; }
const std::vector<TensorInfo>& Reader::tensors() const { return impl_->tensors; }

const Value* Reader::find(const std::string& key) const {
  auto it = impl_->key_index.find(key);
  return it == impl_->key_index.end() ? nullptr : &impl_->metadata[it->second].second;
}

const Value& Reader::get(const std::string& key) const {
  const Value* v = find(key);
  MPQ_CHECK_VALUE(v != nullptr, "GGUF ", impl_->path, ": missing key '", key, "'");
  return *v;
}

const TensorInfo& Reader::tensor(const std::string& name) const {
  auto it = impl_->tensor_index.find(name);
  MPQ_CHECK_VALUE(it != impl_->tensor_index.end(), "GGUF ", impl_->path, ": no tensor named '",
                  name, "'");
  return impl_->tensors[it->second];
}

void Reader::read_into(const TensorInfo& info, void* dst) const {
  std::ifstream in(impl_->path, std::ios::binary);
  MPQ_CHECK_IO(in.good(), "GGUF: cannot open ", impl_->path);
  in.seekg(static_cast<std::streamoff>(impl_->data_offset + info.offset));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(info.nbytes));
  MPQ_CHECK_IO(in.good(), "GGUF ", impl_->path, ": reading tensor ", info.name,
               " failed (was the file changed or truncated?)");
}

std::vector<uint8_t> Reader::read(const std::string& name) const {
  const TensorInfo& info = tensor(name);
  std::vector<uint8_t> out(info.nbytes);
  read_into(info, out.data());
  return out;
}

// ------------------------------------------------------------------ Writer

struct Writer::Impl {
  std::string path;
  uint32_t alignment;
  std::vector<std::pair<std::string, Value>> metadata;
  std::set<std::string> keys;
  std::vector<TensorInfo> tensors;
  std::set<std::string> names;
  uint64_t data_size = 0;  // running, padded
  std::unique_ptr<detail::TempFile> out;
  bool header_written = false, finished = false;
  size_t next_tensor = 0;

  void check_open(const std::string& what) const {
    MPQ_CHECK_VALUE(!finished, "GGUF writer ", path, ": ", what, " after finish() or abort()");
  }

  void write_header() {
    std::vector<char> h;
    write_raw(h, kMagic, 4);
    write_raw(h, &kVersion, 4);
    const uint64_t n_tensors = tensors.size(), n_kv = metadata.size();
    write_raw(h, &n_tensors, 8);
    write_raw(h, &n_kv, 8);
    for (const auto& [key, value] : metadata) {
      write_string(h, key);
      const auto t = static_cast<uint32_t>(value.type());
      write_raw(h, &t, 4);
      write_value(h, value);
    }
    for (const TensorInfo& t : tensors) {
      write_string(h, t.name);
      const uint32_t n_dims = static_cast<uint32_t>(t.shape.size());
      write_raw(h, &n_dims, 4);
      for (int64_t d : t.shape) {
        const uint64_t u = static_cast<uint64_t>(d);
        write_raw(h, &u, 8);
      }
      write_raw(h, &t.type, 4);
      write_raw(h, &t.offset, 8);
    }
    header_written = true;
    out->write(h.data(), h.size());
    out->write_zeros(pad_to(h.size(), alignment) - h.size());
  }
};

Writer::Writer(std::string path, uint32_t alignment) : impl_(std::make_unique<Impl>()) {
  MPQ_CHECK_VALUE(alignment > 0 && (alignment & (alignment - 1)) == 0,
                  "GGUF writer: alignment must be a power of two, got ", alignment);
  impl_->path = std::move(path);
  impl_->alignment = alignment;
  impl_->out = std::make_unique<detail::TempFile>(impl_->path, "GGUF writer");
  if (alignment != kDefaultAlignment) set("general.alignment", Value{alignment});
}

Writer::~Writer() = default;  // the TempFile removes itself unless finish() renamed it

void Writer::abort() {
  impl_->out->discard();
  impl_->finished = true;
}

void Writer::set(const std::string& key, Value value) {
  impl_->check_open("set('" + key + "')");
  MPQ_CHECK_VALUE(!impl_->header_written, "GGUF writer: metadata '", key,
                  "' set after tensor data was written");
  MPQ_CHECK_VALUE(!key.empty(), "GGUF writer: empty key");
  detail::check_utf8(key, "key", "GGUF writer");
  MPQ_CHECK_VALUE(impl_->keys.insert(key).second, "GGUF writer: key '", key, "' set twice");
  if (key == "general.alignment") {
    MPQ_CHECK_VALUE(value.type() == ValueType::kUint32 && std::get<uint32_t>(value.v) == impl_->alignment,
                    "GGUF writer: general.alignment must be the writer's alignment (uint32 ",
                    impl_->alignment, ")");
  }
  impl_->metadata.emplace_back(key, std::move(value));
}

void Writer::add_tensor(const std::string& name, const std::vector<int64_t>& shape, uint32_t type) {
  impl_->check_open("add_tensor('" + name + "')");
  MPQ_CHECK_VALUE(!impl_->header_written, "GGUF writer: tensor '", name,
                  "' added after tensor data was written");
  MPQ_CHECK_VALUE(!name.empty() && name.size() <= kMaxNameLength, "GGUF writer: tensor name '",
                  name, "' must have 1..", kMaxNameLength, " characters (llama.cpp's limit)");
  detail::check_utf8(name, "tensor name", "GGUF writer");
  MPQ_CHECK_VALUE(!impl_->names.count(name), "GGUF writer: tensor '", name, "' added twice");
  TensorInfo t;
  t.name = name;
  t.shape = shape;
  t.type = type;
  t.nbytes = tensor_nbytes(type, shape, name);  // validates before anything is recorded
  t.offset = impl_->data_size;
  const uint64_t end = detail::checked_add(t.offset, t.nbytes, "GGUF writer: data section size");
  detail::checked_add(end, impl_->alignment, "GGUF writer: data section size");  // for pad_to
  impl_->data_size = pad_to(end, impl_->alignment);
  impl_->names.insert(name);
  impl_->tensors.push_back(std::move(t));
}

void Writer::write_tensor(const std::string& name, const void* data, uint64_t nbytes) {
  Impl& m = *impl_;
  m.check_open("write_tensor('" + name + "')");
  MPQ_CHECK_VALUE(m.next_tensor < m.tensors.size(), "GGUF writer: tensor '", name,
                  "' written but all declared tensors were already written");
  const TensorInfo& t = m.tensors[m.next_tensor];
  MPQ_CHECK_VALUE(t.name == name, "GGUF writer: expected data of tensor '", t.name,
                  "' (declaration order), got '", name, "'");
  MPQ_CHECK_VALUE(t.nbytes == nbytes, "GGUF writer: tensor '", name, "' needs ", t.nbytes,
                  " bytes, got ", nbytes);
  if (!m.header_written) m.write_header();
  m.out->write(data, nbytes);
  m.out->write_zeros(pad_to(nbytes, m.alignment) - nbytes);
  ++m.next_tensor;
}

void Writer::finish() {
  Impl& m = *impl_;
  m.check_open("finish()");
  MPQ_CHECK_VALUE(m.next_tensor == m.tensors.size(), "GGUF writer: ", m.tensors.size() - m.next_tensor,
                  " declared tensors were not written (next: '",
                  m.next_tensor < m.tensors.size() ? m.tensors[m.next_tensor].name : "", "')");
  if (!m.header_written) m.write_header();
  m.out->commit();
  m.finished = true;
}

}  // namespace mpq::gguf
