//===- ObjectCache.cpp - Compiled objects kept across compiles ------------===//

#include "targets/common/ObjectCache.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/xxhash.h"

#include <unistd.h>

namespace mlir::moe {

std::string cacheKey(llvm::StringRef text) {
  return llvm::utohexstr(llvm::xxh3_64bits(text), /*LowerCase=*/true, 16);
}

bool copyAtomically(llvm::StringRef from, llvm::StringRef to) {
  std::string temp = (to + ".tmp" + std::to_string(getpid())).str();
  if (llvm::sys::fs::copy_file(from, temp)) {
    return false;
  }
  if (llvm::sys::fs::rename(temp, to)) {
    llvm::sys::fs::remove(temp);
    return false;
  }
  return true;
}

} // namespace mlir::moe
