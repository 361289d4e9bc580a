//===- TorchSaveBuilder.h - torch.save bytes for tests ----------*- C++ -*-===//
//
// Builds what torch.save writes, opcode by opcode and member by member, so a
// test can state exactly which part of a checkpoint is wrong (or hostile):
// `Pickler` emits protocol-2 opcodes, `storedZip` wraps members in a zip
// archive without compression, as torch does.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_UNIT_FRONTENDS_TORCHSAVEBUILDER_H
#define MOE_TEST_UNIT_FRONTENDS_TORCHSAVEBUILDER_H

#include "llvm/Support/CRC.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace moe::test {

using Bytes = std::vector<uint8_t>;

inline void appendLE(Bytes &out, uint64_t value, unsigned width) {
  for (unsigned i = 0; i < width; ++i) {
    out.push_back(uint8_t(value >> (8 * i)));
  }
}

/// A zip archive of stored (uncompressed) members, in the given order.
inline Bytes
storedZip(const std::vector<std::pair<std::string, Bytes>> &files) {
  Bytes out, directory;
  for (const auto &[name, data] : files) {
    uint32_t crc = llvm::crc32(data);
    uint64_t offset = out.size();
    appendLE(out, 0x04034b50, 4);
    appendLE(out, 20, 2); // version needed
    appendLE(out, 0, 2);  // flags
    appendLE(out, 0, 2);  // stored
    appendLE(out, 0, 4);  // time, date
    appendLE(out, crc, 4);
    appendLE(out, data.size(), 4);
    appendLE(out, data.size(), 4);
    appendLE(out, name.size(), 2);
    appendLE(out, 0, 2); // extra
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());

    appendLE(directory, 0x02014b50, 4);
    appendLE(directory, 20, 2); // version made by
    appendLE(directory, 20, 2); // version needed
    appendLE(directory, 0, 2);
    appendLE(directory, 0, 2);
    appendLE(directory, 0, 4);
    appendLE(directory, crc, 4);
    appendLE(directory, data.size(), 4);
    appendLE(directory, data.size(), 4);
    appendLE(directory, name.size(), 2);
    appendLE(directory, 0, 2); // extra
    appendLE(directory, 0, 2); // comment
    appendLE(directory, 0, 2); // disk
    appendLE(directory, 0, 2); // internal attributes
    appendLE(directory, 0, 4); // external attributes
    appendLE(directory, offset, 4);
    directory.insert(directory.end(), name.begin(), name.end());
  }
  uint64_t directoryOffset = out.size();
  out.insert(out.end(), directory.begin(), directory.end());
  appendLE(out, 0x06054b50, 4);
  appendLE(out, 0, 2);
  appendLE(out, 0, 2);
  appendLE(out, files.size(), 2);
  appendLE(out, files.size(), 2);
  appendLE(out, directory.size(), 4);
  appendLE(out, directoryOffset, 4);
  appendLE(out, 0, 2);
  return out;
}

/// Pickle opcodes, one method each; names follow Lib/pickletools.py.
class Pickler {
public:
  Pickler() { op(0x80).byte(2); }
  Pickler &op(uint8_t code) { return byte(code); }
  Pickler &byte(uint8_t b) {
    bytes.push_back(b);
    return *this;
  }
  Pickler &mark() { return op('('); }
  Pickler &none() { return op('N'); }
  Pickler &boolean(bool b) { return op(b ? 0x88 : 0x89); }
  Pickler &integer(int64_t v) {
    if (v >= 0 && v < 256) {
      return op('K').byte(uint8_t(v));
    }
    op(0x8a).byte(8);
    appendLE(bytes, uint64_t(v), 8);
    return *this;
  }
  Pickler &real(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    op('G');
    for (int i = 7; i >= 0; --i) {
      byte(uint8_t(bits >> (8 * i)));
    }
    return *this;
  }
  Pickler &string(const std::string &s) {
    op('X');
    appendLE(bytes, s.size(), 4);
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  Pickler &global(const std::string &module, const std::string &name) {
    op('c');
    for (const std::string *part : {&module, &name}) {
      bytes.insert(bytes.end(), part->begin(), part->end());
      byte('\n');
    }
    return *this;
  }
  Pickler &emptyDict() { return op('}'); }
  Pickler &emptyTuple() { return op(')'); }
  Pickler &tuple() { return op('t'); }
  Pickler &list() { return op('l'); }
  Pickler &setItems() { return op('u'); }
  Pickler &reduce() { return op('R'); }
  Pickler &build() { return op('b'); }
  Pickler &put(uint8_t slot) { return op('q').byte(slot); }
  Pickler &get(uint8_t slot) { return op('h').byte(slot); }
  Pickler &stop() { return op('.'); }

  /// An OrderedDict(): push it, then mark(), key/value pairs, setItems().
  Pickler &orderedDict() {
    return global("collections", "OrderedDict").emptyTuple().reduce();
  }
  /// A tensor as torch writes it: _rebuild_tensor_v2 of the storage `key`
  /// of `storageClass` with `numel` elements, viewed at `offset` with
  /// `shape` and `stride`.
  Pickler &tensor(const std::string &storageClass, const std::string &key,
                  int64_t numel, int64_t offset,
                  const std::vector<int64_t> &shape,
                  const std::vector<int64_t> &stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    mark();
    mark()
        .string("storage")
        .global("torch", storageClass)
        .string(key)
        .string("cpu")
        .integer(numel)
        .tuple()
        .op('Q'); // BINPERSID
    integer(offset);
    mark();
    for (int64_t d : shape) {
      integer(d);
    }
    tuple();
    mark();
    for (int64_t s : stride) {
      integer(s);
    }
    tuple();
    boolean(false);
    orderedDict();
    return tuple().reduce();
  }

  Bytes bytes;
};

/// A torch.save archive: `pickle` as archive/data.pkl plus the storages.
inline Bytes
torchSaveOf(const Bytes &pickle,
            const std::vector<std::pair<std::string, Bytes>> &storages = {}) {
  std::vector<std::pair<std::string, Bytes>> files{
      {"archive/data.pkl", pickle},
      {"archive/byteorder", Bytes{'l', 'i', 't', 't', 'l', 'e'}}};
  for (const auto &[key, data] : storages) {
    files.push_back({"archive/data/" + key, data});
  }
  files.push_back({"archive/version", Bytes{'3', '\n'}});
  return storedZip(files);
}

/// `values` as little-endian f32 bytes.
inline Bytes f32Bytes(const std::vector<float> &values) {
  Bytes out(values.size() * 4);
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

} // namespace moe::test

#endif // MOE_TEST_UNIT_FRONTENDS_TORCHSAVEBUILDER_H
