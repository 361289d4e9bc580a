//===- MappedFile.h - A read-only memory-mapped file ------------*- C++ -*-===//
//
// Checkpoints are mapped, never read into memory: a 1 GB model costs page
// cache, not heap, and the weight writer touches each tensor once.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_CHECKPOINT_MAPPEDFILE_H
#define MOE_FRONTENDS_CHECKPOINT_MAPPEDFILE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace moe::frontend {

/// A read-only private mapping of a whole regular file. Move-only.
class MappedFile {
public:
  /// Maps `path`. Fails with a message naming the path for a missing,
  /// unreadable, non-regular or empty file.
  static llvm::Expected<std::unique_ptr<MappedFile>> open(llvm::StringRef path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  llvm::ArrayRef<uint8_t> bytes() const { return {data, size}; }
  const std::string &path() const { return filePath; }

private:
  MappedFile(std::string path, const uint8_t *data, size_t size)
      : filePath(std::move(path)), data(data), size(size) {}
  std::string filePath;
  const uint8_t *data;
  size_t size;
};

} // namespace moe::frontend

#endif // MOE_FRONTENDS_CHECKPOINT_MAPPEDFILE_H
