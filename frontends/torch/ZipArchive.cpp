//===- ZipArchive.cpp - Bounds-checked reader of stored zip files ---------===//
//
// Algorithm:
//   1. Find the end-of-central-directory record in the last 64 KiB + 22
//      bytes; if a zip64 locator precedes it, take the counts and offsets
//      from the zip64 record instead.
//   2. Walk the central directory, reading zip64 extra fields where a size
//      or offset is saturated (0xFFFFFFFF).
//   3. For every member, check the local header it points at (signature,
//      name) and that its data lies inside the file.
// Every read goes through `Cursor`, which fails instead of leaving the
// buffer.
//
//===----------------------------------------------------------------------===//

#include "frontends/torch/ZipArchive.h"

#include "frontends/checkpoint/Errors.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>

namespace moe::frontend {

namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kZip64EndOfCentralDirectory = 0x06064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint32_t kSaturated32 = 0xFFFFFFFF;
constexpr size_t kEndRecordBytes = 22;
constexpr size_t kMaxCommentBytes = 0xFFFF;

/// Little-endian reads at an offset, failing past the end.
class Cursor {
public:
  Cursor(llvm::ArrayRef<uint8_t> bytes, uint64_t offset)
      : bytes(bytes), offset(offset) {}
  bool read(uint64_t &out, unsigned width) {
    if (offset > bytes.size() || bytes.size() - offset < width) {
      return false;
    }
    out = 0;
    for (unsigned i = 0; i < width; ++i) {
      out |= uint64_t(bytes[offset + i]) << (8 * i);
    }
    offset += width;
    return true;
  }
  bool skip(uint64_t n) {
    if (offset > bytes.size() || bytes.size() - offset < n) {
      return false;
    }
    offset += n;
    return true;
  }
  uint64_t position() const { return offset; }

private:
  llvm::ArrayRef<uint8_t> bytes;
  uint64_t offset;
};

struct Directory {
  uint64_t entries = 0;
  uint64_t size = 0;
  uint64_t offset = 0;
};

llvm::Expected<Directory> findDirectory(llvm::ArrayRef<uint8_t> bytes,
                                        llvm::StringRef name) {
  auto fail = [&](const llvm::Twine &what) {
    return makeError(name + ": not a valid zip archive: " + what);
  };
  if (bytes.size() < kEndRecordBytes) {
    return fail("shorter than an end-of-directory record");
  }
  uint64_t lowest = bytes.size() > kEndRecordBytes + kMaxCommentBytes
                        ? bytes.size() - kEndRecordBytes - kMaxCommentBytes
                        : 0;
  uint64_t end = bytes.size() - kEndRecordBytes;
  bool found = false;
  for (uint64_t at = end + 1; at-- > lowest;) {
    uint64_t signature;
    Cursor c(bytes, at);
    if (c.read(signature, 4) && signature == kEndOfCentralDirectory) {
      end = at;
      found = true;
      break;
    }
  }
  if (!found) {
    return fail("no end-of-central-directory record (truncated file?)");
  }
  Cursor c(bytes, end + 4);
  uint64_t disk, directoryDisk, diskEntries, entries, size, offset;
  c.read(disk, 2);
  c.read(directoryDisk, 2);
  c.read(diskEntries, 2);
  c.read(entries, 2);
  c.read(size, 4);
  c.read(offset, 4);
  Directory dir{entries, size, offset};

  // A zip64 locator sits right before the classic record.
  uint64_t signature;
  if (end >= 20 && Cursor(bytes, end - 20).read(signature, 4) &&
      signature == kZip64Locator) {
    Cursor locator(bytes, end - 16);
    uint64_t recordDisk, recordOffset;
    locator.read(recordDisk, 4);
    locator.read(recordOffset, 8);
    Cursor record(bytes, recordOffset);
    uint64_t recordSignature;
    if (!record.read(recordSignature, 4) ||
        recordSignature != kZip64EndOfCentralDirectory ||
        !record.skip(8 + 2 + 2) || !record.read(disk, 4) ||
        !record.read(directoryDisk, 4) || !record.read(diskEntries, 8) ||
        !record.read(dir.entries, 8) || !record.read(dir.size, 8) ||
        !record.read(dir.offset, 8)) {
      return fail("the zip64 end-of-directory record is missing or cut off");
    }
  }
  if (disk != 0 || directoryDisk != 0 || diskEntries != dir.entries) {
    return fail("multi-disk archives are not supported");
  }
  if (dir.offset > bytes.size() || bytes.size() - dir.offset < dir.size) {
    return fail(llvm::formatv("the central directory ({0} bytes at {1}) "
                              "lies outside the {2}-byte file",
                              dir.size, dir.offset, bytes.size()));
  }
  return dir;
}

} // namespace

bool looksLikeZip(llvm::ArrayRef<uint8_t> bytes) {
  uint64_t signature;
  return Cursor(bytes, 0).read(signature, 4) && signature == kLocalHeader;
}

llvm::Expected<std::vector<ZipMember>>
readZipArchive(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name) {
  auto dir = findDirectory(bytes, name);
  if (!dir) {
    return dir.takeError();
  }
  auto fail = [&](const llvm::Twine &what) {
    return makeError(name + ": not a valid zip archive: " + what);
  };
  // Each central header is at least 46 bytes: a count the directory cannot
  // hold is refused before anything is reserved for it.
  if (dir->entries > dir->size / 46) {
    return fail(llvm::formatv("the directory claims {0} members in {1} bytes",
                              dir->entries, dir->size));
  }
  std::vector<ZipMember> members;
  members.reserve(dir->entries);
  Cursor c(bytes.take_front(dir->offset + dir->size), dir->offset);
  for (uint64_t i = 0; i < dir->entries; ++i) {
    uint64_t signature, flags, method, crc, compressed, size, nameLength,
        extraLength, commentLength, startDisk, localOffset;
    if (!c.read(signature, 4) || signature != kCentralHeader || !c.skip(4) ||
        !c.read(flags, 2) || !c.read(method, 2) || !c.skip(4) ||
        !c.read(crc, 4) || !c.read(compressed, 4) || !c.read(size, 4) ||
        !c.read(nameLength, 2) || !c.read(extraLength, 2) ||
        !c.read(commentLength, 2) || !c.read(startDisk, 2) || !c.skip(6) ||
        !c.read(localOffset, 4)) {
      return fail(llvm::formatv("central directory entry {0} is malformed", i));
    }
    uint64_t nameAt = c.position();
    if (!c.skip(nameLength)) {
      return fail(llvm::formatv("central directory entry {0} is cut off", i));
    }
    std::string memberName(
        reinterpret_cast<const char *>(bytes.data() + nameAt), nameLength);
    // zip64: the saturated fields follow in this order in extra field 1.
    uint64_t extraEnd = c.position() + extraLength;
    while (c.position() + 4 <= extraEnd) {
      uint64_t id, length;
      // A field header past the end of the directory: without this check
      // the loop made no progress (found by test/fuzz/fuzz_torch).
      if (!c.read(id, 2) || !c.read(length, 2)) {
        return fail("member '" + memberName + "' is cut off");
      }
      uint64_t fieldEnd = c.position() + length;
      if (fieldEnd > extraEnd) {
        return fail("member '" + memberName + "' has a malformed extra field");
      }
      if (id == kZip64ExtraId) {
        for (uint64_t *field : {&size, &compressed, &localOffset}) {
          if (*field == kSaturated32 &&
              (c.position() + 8 > fieldEnd || !c.read(*field, 8))) {
            return fail("member '" + memberName +
                        "' has a short zip64 extra field");
          }
        }
      }
      if (!c.skip(fieldEnd - c.position())) {
        return fail("member '" + memberName + "' is cut off");
      }
    }
    if (!c.skip(extraEnd - c.position()) || !c.skip(commentLength)) {
      return fail("member '" + memberName + "' is cut off");
    }
    if (flags & 1) {
      return fail("member '" + memberName + "' is encrypted");
    }
    if (method != 0 || compressed != size) {
      return fail("member '" + memberName +
                  "' is compressed; torch.save stores members uncompressed "
                  "and moec reads them in place");
    }
    if (startDisk != 0) {
      return fail("member '" + memberName + "' starts on another disk");
    }
    Cursor local(bytes, localOffset);
    uint64_t localSignature, localNameLength, localExtraLength;
    if (!local.read(localSignature, 4) || localSignature != kLocalHeader ||
        !local.skip(22) || !local.read(localNameLength, 2) ||
        !local.read(localExtraLength, 2) ||
        !local.skip(localNameLength + localExtraLength)) {
      return fail("member '" + memberName + "': no local header at offset " +
                  llvm::Twine(localOffset));
    }
    uint64_t dataAt = local.position();
    if (dataAt > bytes.size() || bytes.size() - dataAt < size) {
      return fail(llvm::formatv("member '{0}' ({1} bytes at {2}) runs past "
                                "the end of the {3}-byte file (truncated?)",
                                memberName, size, dataAt, bytes.size()));
    }
    members.push_back(
        {std::move(memberName), bytes.slice(dataAt, size), uint32_t(crc)});
  }
  std::sort(
      members.begin(), members.end(),
      [](const ZipMember &a, const ZipMember &b) { return a.name < b.name; });
  for (size_t i = 1; i < members.size(); ++i) {
    if (members[i].name == members[i - 1].name) {
      return fail("the member '" + members[i].name + "' appears twice");
    }
  }
  return members;
}

} // namespace moe::frontend
