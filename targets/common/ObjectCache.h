//===- ObjectCache.h - Compiled objects kept across compiles ----*- C++ -*-===//
//
// moec's cache directory holds compiled objects under keys that hash
// everything they were built from: the kernels (targets/cpu/kernels) and
// the generated host code (compiler/Driver). An object is copied in and
// out through a temporary name, so concurrent compiles sharing the cache
// never see a partial file.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGETS_COMMON_OBJECTCACHE_H
#define MOE_TARGETS_COMMON_OBJECTCACHE_H

#include "llvm/ADT/StringRef.h"

#include <string>

namespace mlir::moe {

/// A cache key: 16 hex digits of xxh3 of `text`.
std::string cacheKey(llvm::StringRef text);

/// Copies `from` to `to` through a temporary, so `to` is never partial;
/// false on any error (the cache is then just missed or not filled).
bool copyAtomically(llvm::StringRef from, llvm::StringRef to);

} // namespace mlir::moe

#endif // MOE_TARGETS_COMMON_OBJECTCACHE_H
