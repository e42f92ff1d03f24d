#include "core/byte_io.h"

#include <cstdio>
#include <fstream>
#include <iterator>

namespace mpq::detail {

std::vector<char> read_file(const std::string& path, const char* who) {
  std::ifstream in(path, std::ios::binary);
  MPQ_CHECK_IO(in.good(), who, ": cannot open ", path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  MPQ_CHECK_IO(!in.bad(), who, ": reading ", path, " failed");
  return bytes;
}

void write_file_atomic(const std::string& path, const std::vector<char>& bytes, const char* who) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MPQ_CHECK_IO(out.good(), who, ": cannot open ", tmp, " for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out.good()) {
      std::remove(tmp.c_str());
      MPQ_CHECK_IO(false, who, ": writing ", tmp, " failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    MPQ_CHECK_IO(false, who, ": cannot rename ", tmp, " to ", path);
  }
}

}  // namespace mpq::detail
