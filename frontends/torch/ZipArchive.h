//===- ZipArchive.h - Bounds-checked reader of stored zip files -*- C++ -*-===//
//
// torch.save (since torch 1.6) writes a zip archive whose members are stored
// uncompressed, so every tensor can be used in place from a memory mapping.
// This reader takes the member table from the central directory (zip64
// included), checks each member's local header against it, and refuses what
// torch never writes: compression, encryption, multi-disk archives,
// duplicate names and members that leave the file.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_TORCH_ZIPARCHIVE_H
#define MOE_FRONTENDS_TORCH_ZIPARCHIVE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moe::frontend {

/// One stored member of a zip archive: its name, its bytes (inside the
/// archive's buffer) and the CRC-32 the archive records for them.
struct ZipMember {
  std::string name;
  llvm::ArrayRef<uint8_t> bytes;
  uint32_t crc32 = 0;
};

/// The members of a zip archive held in `bytes`, sorted by name. Errors are
/// prefixed with `name` (the file's path).
llvm::Expected<std::vector<ZipMember>>
readZipArchive(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name);

/// True when `bytes` starts like a zip archive (a local file header).
bool looksLikeZip(llvm::ArrayRef<uint8_t> bytes);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_TORCH_ZIPARCHIVE_H
