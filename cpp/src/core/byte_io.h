#pragma once
// Bounds-checked reading of little-endian binary files held in memory, and the atomic file write
// (temporary name, then rename) every writer in mpq uses. Readers never trust a length field:
// every read is checked against what is left, so a corrupt or truncated file is an exception.
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <mpq/error.h>

namespace mpq::detail {

static_assert(std::endian::native == std::endian::little, "mpq's file formats assume a little-endian host");

class ByteReader {
 public:
  // `what` names the file in error messages. The bytes must outlive the reader.
  ByteReader(const char* data, uint64_t size, std::string what)
      : data_(data), size_(size), what_(std::move(what)) {}
  ByteReader(const std::vector<char>& data, std::string what)
      : ByteReader(data.data(), data.size(), std::move(what)) {}

  template <typename T>
  T read() {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    read_bytes(&v, sizeof(T));
    return v;
  }
  void read_bytes(void* out, uint64_t n) {
    MPQ_CHECK_VALUE(n <= remaining(), what_, ": truncated or corrupt: needs ", n, " bytes at offset ",
                    pos_, ", only ", remaining(), " left");
    if (n && out != nullptr) std::memcpy(out, data_ + pos_, n);  // nullptr: skip n bytes
    pos_ += n;
  }
  // A u64 length followed by that many bytes, at most `max_length`.
  std::string read_string(uint64_t max_length) {
    const auto n = read<uint64_t>();
    MPQ_CHECK_VALUE(n <= max_length, what_, ": corrupt: a string of ", n, " bytes at offset ", pos_,
                    " (at most ", max_length, " allowed)");
    std::string s(n, '\0');
    read_bytes(s.data(), n);
    return s;
  }
  uint64_t remaining() const { return size_ - pos_; }
  uint64_t position() const { return pos_; }
  const std::string& what() const { return what_; }

 private:
  const char* data_;
  uint64_t size_;
  std::string what_;
  uint64_t pos_ = 0;
};

// Appends little-endian values to a byte buffer.
class ByteWriter {
 public:
  template <typename T>
  void write(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write_bytes(&v, sizeof(T));
  }
  void write_bytes(const void* p, uint64_t n) {
    const char* c = static_cast<const char*>(p);
    buffer_.insert(buffer_.end(), c, c + n);
  }
  void write_string(const std::string& s) {
    write<uint64_t>(s.size());
    write_bytes(s.data(), s.size());
  }
  const std::vector<char>& bytes() const { return buffer_; }

 private:
  std::vector<char> buffer_;
};

// The whole file, or IoError naming it.
std::vector<char> read_file(const std::string& path, const char* who);

// A file mapped into memory (private: writes go to copies of the pages, never to the file): its
// pages are read as they are used and, being the file's, can be dropped again under memory
// pressure, so a file as large as the memory (a 1.5B model's calibration: 10 GB) is read without
// a copy of it on the heap.
class MappedFile {
 public:
  MappedFile(const std::string& path, const char* who);  // IoError naming the file
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }  // writable, privately (see above)
  uint64_t size() const { return size_; }

 private:
  const char* data_ = nullptr;
  uint64_t size_ = 0;
};

// The temporary file of an atomic write: `path + ".tmp"`, created at construction and locked
// (flock) while it is written. The name is fixed, not per process, so that the next writer to the
// same path replaces a stale one left by a killed process (its lock died with it; the file is
// truncated), while a second live writer to the same path fails with IoError instead of
// interleaving. Removed on every path that does not end in commit(): an I/O error, discard(), the
// destructor.
class TempFile {
 public:
  TempFile(const std::string& path, std::string who);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write(const void* data, uint64_t n);  // IoError (and the file removed) on failure
  void write_zeros(uint64_t n);
  void commit();                             // closes and renames onto `path`
  void discard() noexcept;                   // removes the file now; idempotent

 private:
  std::string path_, tmp_, who_;
  int fd_ = -1;
};

// Writes `bytes` through a TempFile: a reader never sees half a file.
void write_file_atomic(const std::string& path, const std::vector<char>& bytes, const char* who);

}  // namespace mpq::detail
