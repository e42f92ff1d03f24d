#include <mpq/gguf.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <mpq/error.h>

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
  void need(uint64_t n) const {
    MPQ_CHECK_VALUE(n <= size_ - pos_, "GGUF ", path_, ": truncated or corrupt: needs ", n,
                    " bytes at offset ", pos_, " of ", size_);
  }
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
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

Value read_value(FileCursor& c, ValueType type, int depth) {
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
    case ValueType::kBool: {
      const auto b = c.get<uint8_t>();
      MPQ_CHECK_VALUE(b <= 1, "GGUF ", c.path(), ": bool value ", int(b), " at offset ", c.pos() - 1);
      out.v = b == 1;
      break;
    }
    case ValueType::kString: out.v = c.string(); break;
    case ValueType::kArray: {
      MPQ_CHECK_VALUE(depth < kMaxArrayDepth, "GGUF ", c.path(), ": arrays nested deeper than ",
                      kMaxArrayDepth, " at offset ", c.pos());
      const auto et = c.get<uint32_t>();
      MPQ_CHECK_VALUE(valid_type(et), "GGUF ", c.path(), ": invalid array element type ", et,
                      " at offset ", c.pos() - 4);
      const auto n = c.get<uint64_t>();
      Array a;
      a.type = static_cast<ValueType>(et);
      // Enough bytes must remain for n elements before reserving memory for them.
      MPQ_CHECK_VALUE(n <= (c.size() - c.pos()) / min_encoded_size(a.type), "GGUF ", c.path(),
                      ": array of ", n, " elements does not fit in the file (offset ", c.pos(), ")");
      a.items.reserve(n);
      for (uint64_t i = 0; i < n; ++i) a.items.push_back(read_value(c, a.type, depth + 1));
      out.v = std::move(a);
      break;
    }
  }
  return out;
}

void write_value(std::vector<char>& out, const Value& value) {
  auto raw = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    out.insert(out.end(), c, c + n);
  };
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          const uint64_t n = x.size();
          raw(&n, 8);
          raw(x.data(), n);
        } else if constexpr (std::is_same_v<T, Array>) {
          const auto t = static_cast<uint32_t>(x.type);
          const uint64_t n = x.items.size();
          raw(&t, 4);
          raw(&n, 8);
          for (const Value& item : x.items) {
            MPQ_CHECK_VALUE(item.type() == x.type, "GGUF: an array of ", to_string(x.type),
                            " holds a ", to_string(item.type()));
            write_value(out, item);
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          const uint8_t b = x ? 1 : 0;
          raw(&b, 1);
        } else {
          raw(&x, sizeof(x));
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

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t tensor_nbytes(uint32_t type, const std::vector<int64_t>& shape, const std::string& name) {
  namespace g = mpq::detail::ggml;
  MPQ_CHECK_VALUE(g::is_supported(static_cast<g::Type>(type)), "GGUF tensor ", name, ": ggml type ", type,
                  " is not supported by mpq");
  MPQ_CHECK_VALUE(!shape.empty() && shape.size() <= kMaxDims, "GGUF tensor ", name, ": ",
                  shape.size(), " dimensions (1..", kMaxDims, " allowed)");
  const g::TypeInfo& info = g::info(static_cast<g::Type>(type));
  uint64_t rows = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    MPQ_CHECK_VALUE(shape[i] >= 0, "GGUF tensor ", name, ": negative dimension ", shape[i]);
    if (i > 0) {
      MPQ_CHECK_VALUE(shape[i] == 0 || rows <= (uint64_t{1} << 62) / static_cast<uint64_t>(shape[i]),
                      "GGUF tensor ", name, ": element count overflows");
      rows *= static_cast<uint64_t>(shape[i]);
    }
  }
  MPQ_CHECK_VALUE(shape[0] % info.block_size == 0, "GGUF tensor ", name, ": row length ", shape[0],
                  " is not a multiple of ", info.name, "'s block of ", info.block_size);
  const uint64_t row = static_cast<uint64_t>(shape[0] / info.block_size) * info.type_size;
  MPQ_CHECK_VALUE(rows == 0 || row <= (uint64_t{1} << 62) / rows, "GGUF tensor ", name,
                  ": byte count overflows");
  return row * rows;
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
  MPQ_CHECK_VALUE(n_kv <= c.size() / 14 && n_tensors <= c.size() / 33, "GGUF ", path,
                  ": corrupt header: ", n_kv, " keys and ", n_tensors, " tensors in ", c.size(),
                  " bytes");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string();
    MPQ_CHECK_VALUE(!key.empty(), "GGUF ", path, ": empty key at index ", i);
    MPQ_CHECK_VALUE(!m.key_index.count(key), "GGUF ", path, ": duplicate key '", key, "'");
    const auto t = c.get<uint32_t>();
    MPQ_CHECK_VALUE(valid_type(t), "GGUF ", path, ": key '", key, "' has invalid type ", t);
    Value v = read_value(c, static_cast<ValueType>(t), 0);
    m.key_index[key] = m.metadata.size();
    m.metadata.emplace_back(std::move(key), std::move(v));
  }
  if (const Value* a = find("general.alignment")) {
    MPQ_CHECK_VALUE(a->type() == ValueType::kUint32, "GGUF ", path,
                    ": general.alignment must be a uint32");
    const uint32_t al = std::get<uint32_t>(a->v);
    MPQ_CHECK_VALUE(al > 0 && (al & (al - 1)) == 0, "GGUF ", path, ": general.alignment ", al,
                    " is not a power of two");
    m.alignment = al;
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo ti;
    ti.name = c.string();
    MPQ_CHECK_VALUE(!ti.name.empty() && ti.name.size() <= 1024, "GGUF ", path, ": tensor ", i,
                    " has an invalid name length ", ti.name.size());
    MPQ_CHECK_VALUE(!m.tensor_index.count(ti.name), "GGUF ", path, ": duplicate tensor '", ti.name, "'");
    const auto n_dims = c.get<uint32_t>();
    MPQ_CHECK_VALUE(n_dims >= 1 && n_dims <= kMaxDims, "GGUF ", path, ": tensor ", ti.name, " has ",
                    n_dims, " dimensions");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = c.get<uint64_t>();
      MPQ_CHECK_VALUE(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "GGUF ",
                      path, ": tensor ", ti.name, " has dimension ", dim);
      ti.shape.push_back(static_cast<int64_t>(dim));
    }
    ti.type = c.get<uint32_t>();
    ti.offset = c.get<uint64_t>();
    ti.nbytes = tensor_nbytes(ti.type, ti.shape, ti.name);
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
  std::string path, tmp;
  uint32_t alignment;
  std::vector<std::pair<std::string, Value>> metadata;
  std::set<std::string> keys;
  std::vector<TensorInfo> tensors;
  std::set<std::string> names;
  uint64_t data_size = 0;  // running, padded
  std::ofstream out;
  bool header_written = false, finished = false;
  size_t next_tensor = 0;

  void write_header() {
    std::vector<char> h;
    auto raw = [&](const void* p, size_t n) {
      const char* c = static_cast<const char*>(p);
      h.insert(h.end(), c, c + n);
    };
    raw(kMagic, 4);
    raw(&kVersion, 4);
    const uint64_t n_tensors = tensors.size(), n_kv = metadata.size();
    raw(&n_tensors, 8);
    raw(&n_kv, 8);
    for (const auto& [key, value] : metadata) {
      write_value(h, Value{key});
      const auto t = static_cast<uint32_t>(value.type());
      raw(&t, 4);
      write_value(h, value);
    }
    for (const TensorInfo& t : tensors) {
      write_value(h, Value{t.name});
      const uint32_t n_dims = static_cast<uint32_t>(t.shape.size());
      raw(&n_dims, 4);
      for (int64_t d : t.shape) {
        const uint64_t u = static_cast<uint64_t>(d);
        raw(&u, 8);
      }
      raw(&t.type, 4);
      raw(&t.offset, 8);
    }
    h.resize(pad_to(h.size(), alignment), '\0');
    out.open(tmp, std::ios::binary | std::ios::trunc);
    MPQ_CHECK_IO(out.good(), "GGUF: cannot open ", tmp, " for writing");
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    header_written = true;
  }
};

Writer::Writer(std::string path, uint32_t alignment) : impl_(std::make_unique<Impl>()) {
  MPQ_CHECK_VALUE(alignment > 0 && (alignment & (alignment - 1)) == 0,
                  "GGUF writer: alignment must be a power of two, got ", alignment);
  impl_->path = std::move(path);
  impl_->tmp = impl_->path + ".tmp";
  impl_->alignment = alignment;
  if (alignment != kDefaultAlignment) set("general.alignment", Value{alignment});
}

Writer::~Writer() {
  if (!impl_->finished) {
    if (impl_->out.is_open()) impl_->out.close();
    std::remove(impl_->tmp.c_str());
  }
}

void Writer::set(const std::string& key, Value value) {
  MPQ_CHECK_VALUE(!impl_->header_written, "GGUF writer: metadata '", key,
                  "' set after tensor data was written");
  MPQ_CHECK_VALUE(!key.empty(), "GGUF writer: empty key");
  MPQ_CHECK_VALUE(impl_->keys.insert(key).second, "GGUF writer: key '", key, "' set twice");
  if (key == "general.alignment") {
    MPQ_CHECK_VALUE(value.type() == ValueType::kUint32 && std::get<uint32_t>(value.v) == impl_->alignment,
                    "GGUF writer: general.alignment must be the writer's alignment (uint32 ",
                    impl_->alignment, ")");
  }
  impl_->metadata.emplace_back(key, std::move(value));
}

void Writer::add_tensor(const std::string& name, const std::vector<int64_t>& shape, uint32_t type) {
  MPQ_CHECK_VALUE(!impl_->header_written, "GGUF writer: tensor '", name,
                  "' added after tensor data was written");
  MPQ_CHECK_VALUE(!name.empty() && name.size() <= kMaxNameLength, "GGUF writer: tensor name '",
                  name, "' must have 1..", kMaxNameLength, " characters (llama.cpp's limit)");
  MPQ_CHECK_VALUE(!impl_->names.count(name), "GGUF writer: tensor '", name, "' added twice");
  TensorInfo t;
  t.name = name;
  t.shape = shape;
  t.type = type;
  t.nbytes = tensor_nbytes(type, shape, name);  // validates before anything is recorded
  impl_->names.insert(name);
  t.offset = impl_->data_size;
  impl_->data_size = pad_to(t.offset + t.nbytes, impl_->alignment);
  impl_->tensors.push_back(std::move(t));
}

void Writer::write_tensor(const std::string& name, const void* data, uint64_t nbytes) {
  Impl& m = *impl_;
  MPQ_CHECK_VALUE(!m.finished, "GGUF writer: already finished");
  MPQ_CHECK_VALUE(m.next_tensor < m.tensors.size(), "GGUF writer: tensor '", name,
                  "' written but all declared tensors were already written");
  const TensorInfo& t = m.tensors[m.next_tensor];
  MPQ_CHECK_VALUE(t.name == name, "GGUF writer: expected data of tensor '", t.name,
                  "' (declaration order), got '", name, "'");
  MPQ_CHECK_VALUE(t.nbytes == nbytes, "GGUF writer: tensor '", name, "' needs ", t.nbytes,
                  " bytes, got ", nbytes);
  if (!m.header_written) m.write_header();
  m.out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  static const char zeros[256] = {};
  const uint64_t padding = pad_to(nbytes, m.alignment) - nbytes;
  m.out.write(zeros, static_cast<std::streamsize>(padding));
  MPQ_CHECK_IO(m.out.good(), "GGUF writer: writing ", m.tmp, " failed (disk full?)");
  ++m.next_tensor;
}

void Writer::finish() {
  Impl& m = *impl_;
  MPQ_CHECK_VALUE(!m.finished, "GGUF writer: already finished");
  MPQ_CHECK_VALUE(m.next_tensor == m.tensors.size(), "GGUF writer: ", m.tensors.size() - m.next_tensor,
                  " declared tensors were not written (next: '",
                  m.next_tensor < m.tensors.size() ? m.tensors[m.next_tensor].name : "", "')");
  if (!m.header_written) m.write_header();
  m.out.close();
  MPQ_CHECK_IO(!m.out.fail(), "GGUF writer: closing ", m.tmp, " failed (disk full?)");
  MPQ_CHECK_IO(std::rename(m.tmp.c_str(), m.path.c_str()) == 0, "GGUF writer: cannot rename ",
               m.tmp, " to ", m.path);
  m.finished = true;
}

}  // namespace mpq::gguf
