//===- MappedFile.cpp - A read-only memory-mapped file --------------------===//

#include "frontends/checkpoint/MappedFile.h"

#include "frontends/checkpoint/Errors.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace moe::frontend {

llvm::Expected<std::unique_ptr<MappedFile>>
MappedFile::open(llvm::StringRef path) {
  std::string name = path.str();
  auto fail = [&](const llvm::Twine &why) {
    return makeError(name + ": " + why);
  };
  int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(std::strerror(errno));
  }
  struct stat info;
  if (fstat(fd, &info) != 0) {
    int err = errno;
    ::close(fd);
    return fail(std::strerror(err));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return fail("not a regular file");
  }
  if (info.st_size == 0) {
    ::close(fd);
    return fail("file is empty");
  }
  size_t size = static_cast<size_t>(info.st_size);
  void *data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd); // the mapping keeps the file alive
  if (data == MAP_FAILED) {
    return fail(llvm::Twine("cannot map: ") + std::strerror(err));
  }
  return std::unique_ptr<MappedFile>(new MappedFile(
      std::move(name), static_cast<const uint8_t *>(data), size));
}

MappedFile::~MappedFile() { munmap(const_cast<uint8_t *>(data), size); }

} // namespace moe::frontend
