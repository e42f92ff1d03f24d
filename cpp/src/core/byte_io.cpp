#include "core/byte_io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mpq::detail {

std::vector<char> read_file(const std::string& path, const char* who) {
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK_IO(in.good(), who, ": cannot open ", path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  MPQ_CHECK_IO(!in.bad(), who, ": reading ", path, " failed");
  return bytes;
}

MappedFile::MappedFile(const std::string& path, const char* who) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MPQ_CHECK_IO(fd >= 0, who, ": cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    MPQ_CHECK_IO(false, who, ": ", path, " is not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps the file
    MPQ_CHECK_IO(p != MAP_FAILED, who, ": cannot map ", path, ": ", std::strerror(err));
    data_ = static_cast<const char*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
}

TempFile::TempFile(const std::string& path, std::string who)
    : path_(path), tmp_(path + ".tmp"), who_(std::move(who)) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  MPQ_CHECK_IO(fd_ >= 0, who_, ": cannot open ", tmp_, " for writing: ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);  // another live writer owns it: leave its file alone
    fd_ = -1;
    MPQ_CHECK_IO(false, who_, ": ", tmp_, " is locked by another writer (a second writer to ",
                 path_, ", in this or another process)");
  }
  if (::ftruncate(fd_, 0) != 0) {  // a stale file of a killed writer: start afresh
    const int err = errno;
    discard();
    MPQ_CHECK_IO(false, who_, ": cannot truncate ", tmp_, ": ", std::strerror(err));
  }
}

TempFile::~TempFile() { discard(); }

void TempFile::discard() noexcept {
  if (fd_ < 0) return;
  ::unlink(tmp_.c_str());  // while the lock is held: nobody else can have taken the file over
  ::close(fd_);
  fd_ = -1;
}

void TempFile::write(const void* data, uint64_t n) {
  MPQ_CHECK_IO(fd_ >= 0, who_, ": ", tmp_, " is closed (an earlier write failed or it was discarded)");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n > (uint64_t{1} << 30) ? (size_t{1} << 30) : n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      discard();
      MPQ_CHECK_IO(false, who_, ": writing ", tmp_, " failed: ", std::strerror(err), " (disk full?)");
    }
    p += w;
    n -= static_cast<uint64_t>(w);
  }
}

void TempFile::write_zeros(uint64_t n) {
  static const char zeros[4096] = {};
  while (n > 0) {
    const uint64_t k = n < sizeof(zeros) ? n : sizeof(zeros);
    write(zeros, k);
    n -= k;
  }
}

void TempFile::commit() {
  MPQ_CHECK_IO(fd_ >= 0, who_, ": ", tmp_, " is closed (an earlier write failed or it was discarded)");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    discard();
    MPQ_CHECK_IO(false, who_, ": cannot move ", tmp_, " to ", path_, ": ", std::strerror(err));
  }
  ::close(fd_);  // after the rename, so the lock covers the whole life of the temporary name
  fd_ = -1;
}

void write_file_atomic(const std::string& path, const std::vector<char>& bytes, const char* who) {
  TempFile tmp(path, who);
  tmp.write(bytes.data(), bytes.size());
  tmp.commit();
}

}  // namespace mpq::detail
