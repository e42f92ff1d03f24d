#pragma once
// GGUF v3 (ggml's model file format, docs/gguf.md): a metadata key/value store, tensor infos, and
// aligned tensor data. Reader validates everything before trusting it (sizes with checked
// arithmetic, keys and tensor names as UTF-8, at most MemoryBudget's multiple of the file's size
// in memory); Writer streams tensor data to a temporary file and renames it when complete.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace mpq::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

const char* to_string(ValueType type);

struct Value;

// An array of values of one type, stored flat: one std::vector of the element type (bools as
// std::vector<bool>, strings as std::vector<std::string>; GGUF allows arrays of arrays). A GGUF
// array of a million uint8 takes a megabyte, not a million variants.
struct Array {
  std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
               std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
               std::vector<float>, std::vector<bool>, std::vector<std::string>, std::vector<Array>,
               std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>>
      items;  // the alternative's index is the element ValueType

  // An empty array of `type` elements.
  static Array of(ValueType type);
  ValueType type() const { return static_cast<ValueType>(items.index()); }
  size_t size() const;
  // Element i as a Value (a copy); ValueError when i is out of range.
  Value at(size_t i) const;
  // The elements; ValueError naming both types when the array holds another type.
  template <typename T>
  const std::vector<T>& as() const;
};

// A metadata value. The variant's alternative determines its GGUF type.
struct Value {
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
               Array, uint64_t, int64_t, double>
      v;

  ValueType type() const;
  // The value as a number (integers, floats, bools); throws ValueError for strings and arrays.
  double as_double() const;
  int64_t as_int() const;
  const std::string& as_string() const;
  const Array& as_array() const;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // GGUF order: innermost first (a torch [out, in] weight is [in, out])
  uint32_t type = 0;           // ggml type id
  uint64_t offset = 0;         // from the start of the data section
  uint64_t nbytes = 0;

  int64_t numel() const;
};

// Bytes of a tensor of ggml type `type` with GGUF shape `shape`; ValueError if the type is not
// one mpq knows or the innermost dimension is not a multiple of its block.
uint64_t tensor_nbytes(uint32_t type, const std::vector<int64_t>& shape, const std::string& name);

class Reader {
 public:
  // Reads and validates the header, metadata and tensor infos; tensor data is read on demand.
  explicit Reader(const std::string& path);
  ~Reader();
  Reader(Reader&&) noexcept;
  Reader& operator=(Reader&&) noexcept;

  const std::string& path() const;
  uint32_t version() const;
  uint32_t alignment() const;
  uint64_t data_offset() const;  // file offset of the data section
  const std::vector<std::pair<std::string, Value>>& metadata() const;
  const Value* find(const std::string& key) const;  // nullptr if absent
  const Value& get(const std::string& key) const;   // ValueError naming the key if absent
  const std::vector<TensorInfo>& tensors() const;
  const TensorInfo& tensor(const std::string& name) const;  // ValueError if absent
  // The tensor's raw bytes (quantized blocks or plain values) as stored.
  std::vector<uint8_t> read(const std::string& name) const;
  void read_into(const TensorInfo& info, void* dst) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Writer {
 public:
  // Writes `path + ".tmp"` (created now, locked while written; see detail::TempFile) and renames it
  // to `path` in finish(): nothing appears at `path` before. The temporary file is removed on an
  // I/O error, by abort() and by a Writer destroyed unfinished; a stale one a killed process left
  // is replaced by the next Writer to the same path. IoError if another live Writer writes it.
  explicit Writer(std::string path, uint32_t alignment = 32);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Metadata and tensor declarations come first, in the order they should appear in the file.
  void set(const std::string& key, Value value);
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, uint32_t type);
  // Then the data, tensor by tensor in declaration order (the header is written on the first call).
  void write_tensor(const std::string& name, const void* data, uint64_t nbytes);
  // Writes the header if no tensor was added, checks every tensor was written, renames into place.
  void finish();
  // Gives up: removes the temporary file now (idempotent); later calls throw ValueError.
  void abort();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mpq::gguf
