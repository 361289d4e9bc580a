//===- TorchCheckpoint.cpp - Tensors of a torch.save zip file -------------===//
//
// Compiled with exceptions on (nlohmann_json writes the metadata); none
// escapes this file.
//
//===----------------------------------------------------------------------===//

#include "frontends/torch/TorchCheckpoint.h"

#include "frontends/checkpoint/Errors.h"
#include "frontends/torch/Pickle.h"
#include "frontends/torch/ZipArchive.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CRC.h"
#include "llvm/Support/FormatVariadic.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace moe::frontend {

namespace {

using json = nlohmann::json;
using Kind = PickleValue::Kind;

/// Keys under which training scripts keep the model's state dict, in the
/// order they are preferred when several dicts of tensors exist.
constexpr llvm::StringLiteral kStateDictKeys[] = {
    "model", "state_dict", "model_state_dict", "module", "model_state"};

/// Deepest nesting converted to metadata; deeper (or cyclic) entries are
/// left out with a note.
constexpr int kMaxMetadataDepth = 32;

bool isStateDict(const PickleValue &v) {
  if (v.kind != Kind::Dict || v.dictSize() == 0) {
    return false;
  }
  for (size_t i = 0; i < v.dictSize(); ++i) {
    if (v.dictKey(i)->kind != Kind::String || !v.dictValue(i)->isTensor()) {
      return false;
    }
  }
  return true;
}

bool holdsTensors(const PickleValue &v, int depth = 0) {
  if (v.isTensor() || v.kind == Kind::Storage) {
    return true;
  }
  if (depth > kMaxMetadataDepth) {
    return false;
  }
  for (const PickleValue *item : v.items) {
    if (holdsTensors(*item, depth + 1)) {
      return true;
    }
  }
  return false;
}

/// `v` as JSON, or nullopt when it nests too deeply (or cycles).
std::optional<json> toJson(const PickleValue &v, int depth = 0) {
  if (depth > kMaxMetadataDepth) {
    return std::nullopt;
  }
  switch (v.kind) {
  case Kind::None:
    return json(nullptr);
  case Kind::Bool:
    return json(v.boolean);
  case Kind::Int:
    return json(v.integer);
  case Kind::Float:
    return json(v.real);
  case Kind::String:
  case Kind::Global:
    // Invalid UTF-8 is replaced when the metadata is dumped.
    return json(v.text);
  case Kind::Bytes:
    return json(llvm::toHex(v.text));
  case Kind::Tuple:
  case Kind::List: {
    json array = json::array();
    for (const PickleValue *item : v.items) {
      auto converted = toJson(*item, depth + 1);
      if (!converted) {
        return std::nullopt;
      }
      array.push_back(std::move(*converted));
    }
    return array;
  }
  case Kind::Dict: {
    json object = json::object();
    for (size_t i = 0; i < v.dictSize(); ++i) {
      const PickleValue &key = *v.dictKey(i);
      std::string name = key.kind == Kind::String ? key.text
                         : key.kind == Kind::Int  ? std::to_string(key.integer)
                                                  : "";
      auto converted = toJson(*v.dictValue(i), depth + 1);
      if (name.empty() || !converted) {
        return std::nullopt;
      }
      object[name] = std::move(*converted);
    }
    return object;
  }
  case Kind::Storage:
  case Kind::Tensor:
    return std::nullopt;
  }
  return std::nullopt;
}

class Reader {
public:
  Reader(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name)
      : bytes(bytes), name(name) {}

  llvm::Error read(std::vector<TensorInfo> &tensors,
                   std::map<std::string, std::string> &metadata,
                   std::vector<std::string> &notes);

private:
  llvm::Error fail(const llvm::Twine &what) const {
    return makeError(name + ": " + what);
  }
  const ZipMember *member(llvm::StringRef memberName) const {
    auto it = std::lower_bound(
        members.begin(), members.end(), memberName,
        [](const ZipMember &m, llvm::StringRef n) { return m.name < n; });
    return it != members.end() && it->name == memberName ? &*it : nullptr;
  }
  llvm::Error findRecord();
  /// Adds tensor `key` of the state dict, or a note why it is left out.
  llvm::Error addTensor(const std::string &key, const PickleValue &tensor,
                        std::vector<TensorInfo> &tensors,
                        std::vector<std::string> &notes);

  llvm::ArrayRef<uint8_t> bytes;
  llvm::StringRef name;
  std::vector<ZipMember> members;
  /// The archive's top folder, e.g. "archive/".
  std::string prefix;
};

llvm::Error Reader::findRecord() {
  auto archive = readZipArchive(bytes, name);
  if (!archive) {
    return archive.takeError();
  }
  members = std::move(*archive);
  std::vector<std::string> records;
  for (const ZipMember &m : members) {
    llvm::StringRef n(m.name);
    size_t slash = n.find('/');
    if (slash != llvm::StringRef::npos && n.substr(slash) == "/data.pkl") {
      records.push_back(n.substr(0, slash + 1).str());
    }
  }
  if (records.size() != 1) {
    return fail(llvm::formatv(
        "a zip archive with {0} '<folder>/data.pkl' members; torch.save "
        "writes exactly one",
        records.size()));
  }
  prefix = records.front();
  if (member(prefix + "constants.pkl")) {
    return fail("a TorchScript archive (torch.jit.save); save the state dict "
                "with torch.save(model.state_dict(), path) instead");
  }
  if (const ZipMember *order = member(prefix + "byteorder")) {
    llvm::StringRef text(reinterpret_cast<const char *>(order->bytes.data()),
                         order->bytes.size());
    if (text != "little") {
      return fail("stores tensors in '" + text +
                  "' byte order; moec reads little-endian checkpoints only");
    }
  }
  return llvm::Error::success();
}

llvm::Error Reader::addTensor(const std::string &key, const PickleValue &t,
                              std::vector<TensorInfo> &tensors,
                              std::vector<std::string> &notes) {
  const PickleValue &storage = *t.storage;
  std::string where = "tensor '" + key + "'";
  const ZipMember *data = member(prefix + "data/" + storage.text);
  if (!data) {
    return fail(where + ": its storage '" + prefix + "data/" + storage.text +
                "' is missing from the archive");
  }
  const StorageType &type = *storage.storageType;
  uint64_t size = type.elementBytes;
  uint64_t storageBytes;
  if (__builtin_mul_overflow(uint64_t(storage.numel), size, &storageBytes) ||
      storageBytes != data->bytes.size()) {
    return fail(llvm::formatv("{0}: its storage '{1}' should hold {2} "
                              "elements of {3} bytes but has {4} bytes",
                              where, data->name, storage.numel, size,
                              data->bytes.size()));
  }
  // Row-major extent of the view, overflow-checked.
  uint64_t count = 1;
  for (int64_t d : t.shape) {
    if (__builtin_mul_overflow(count, uint64_t(d), &count)) {
      return fail(where + ": its shape overflows");
    }
  }
  bool contiguous = true;
  uint64_t expected = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] != 1 && uint64_t(t.stride[i]) != expected) {
      contiguous = false;
    }
    expected *= uint64_t(t.shape[i]);
  }
  uint64_t end;
  if (count && (__builtin_add_overflow(uint64_t(t.offset), count, &end) ||
                end > uint64_t(storage.numel))) {
    return fail(llvm::formatv("{0}: elements [{1}, {1}+{2}) lie outside its "
                              "storage of {3}",
                              where, t.offset, count, storage.numel));
  }
  if (!type.dtype) {
    notes.push_back(name.str() + ": left out " + where + " (" +
                    type.name.str() + " has no moec element type)");
    return llvm::Error::success();
  }
  if (!contiguous && count > 1) {
    notes.push_back(name.str() + ": left out " + where +
                    " (a non-contiguous view; re-save it with .contiguous())");
    return llvm::Error::success();
  }
  TensorInfo info;
  info.name = key;
  info.dtype = *type.dtype;
  info.shape.assign(t.shape.begin(), t.shape.end());
  info.bytes = data->bytes.slice(count ? t.offset * size : 0, count * size);
  tensors.push_back(std::move(info));
  return llvm::Error::success();
}

llvm::Error Reader::read(std::vector<TensorInfo> &tensors,
                         std::map<std::string, std::string> &metadata,
                         std::vector<std::string> &notes) {
  if (llvm::Error e = findRecord()) {
    return e;
  }
  const ZipMember &record = *member(prefix + "data.pkl");
  if (llvm::crc32(record.bytes) != record.crc32) {
    return fail("'" + record.name + "' fails its CRC-32 check (corrupt file)");
  }
  auto tree = unpickle(record.bytes, name);
  if (!tree) {
    return tree.takeError();
  }
  const PickleValue &root = (*tree)->root();
  if (root.kind != Kind::Dict) {
    return fail("holds a pickled object that is not a dict; expected a state "
                "dict or a checkpoint dict holding one");
  }

  // The state dict: the root itself when it holds tensors, else the one
  // dict of tensors among its entries (or the preferred key among several).
  const PickleValue *stateDict = nullptr;
  std::string stateKey;
  bool rootHoldsTensors = false;
  for (size_t i = 0; i < root.dictSize(); ++i) {
    rootHoldsTensors |= root.dictValue(i)->isTensor();
  }
  if (rootHoldsTensors) {
    stateDict = &root;
  } else {
    std::vector<std::pair<std::string, const PickleValue *>> candidates;
    for (size_t i = 0; i < root.dictSize(); ++i) {
      if (root.dictKey(i)->kind == Kind::String &&
          isStateDict(*root.dictValue(i))) {
        candidates.push_back({root.dictKey(i)->text, root.dictValue(i)});
      }
    }
    for (llvm::StringRef preferred : kStateDictKeys) {
      for (auto &[key, value] : candidates) {
        if (!stateDict && key == preferred) {
          stateDict = value;
          stateKey = key;
        }
      }
    }
    if (!stateDict && candidates.size() == 1) {
      std::tie(stateKey, stateDict) = candidates.front();
    }
    if (!stateDict) {
      std::vector<std::string> keys;
      for (size_t i = 0; i < root.dictSize(); ++i) {
        if (root.dictKey(i)->kind == Kind::String) {
          keys.push_back("'" + root.dictKey(i)->text + "'");
        }
      }
      return fail(
          "holds a dict (keys " + llvm::join(keys, ", ") +
          ") without a state dict: expected tensors at its top level or one "
          "dict of tensors under a key such as 'model' or 'state_dict'");
    }
    notes.push_back(name.str() + ": the state dict is entry '" + stateKey +
                    "'");
  }

  for (size_t i = 0; i < stateDict->dictSize(); ++i) {
    const PickleValue &key = *stateDict->dictKey(i);
    const PickleValue &value = *stateDict->dictValue(i);
    if (!value.isTensor()) {
      continue;
    }
    if (key.kind != Kind::String) {
      return fail("the state dict has a tensor under a key that is not a "
                  "string");
    }
    if (llvm::Error e = addTensor(key.text, value, tensors, notes)) {
      return e;
    }
  }
  std::sort(
      tensors.begin(), tensors.end(),
      [](const TensorInfo &a, const TensorInfo &b) { return a.name < b.name; });
  for (size_t i = 1; i < tensors.size(); ++i) {
    if (tensors[i].name == tensors[i - 1].name) {
      return fail("the state dict repeats the key '" + tensors[i].name + "'");
    }
  }

  // Everything else that holds no tensors is metadata.
  for (size_t i = 0; i < root.dictSize(); ++i) {
    const PickleValue &key = *root.dictKey(i);
    const PickleValue &value = *root.dictValue(i);
    if (&value == stateDict || value.isTensor() || key.kind != Kind::String) {
      continue;
    }
    if (holdsTensors(value)) {
      notes.push_back(name.str() + ": ignored entry '" + key.text +
                      "' (it holds tensors but is not the model's state "
                      "dict, e.g. optimizer state)");
      continue;
    }
    std::optional<json> converted = toJson(value);
    if (!converted) {
      notes.push_back(name.str() + ": ignored entry '" + key.text +
                      "' (nested too deeply to read)");
      continue;
    }
    metadata[key.text] =
        converted->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return llvm::Error::success();
}

} // namespace

bool TorchCheckpoint::looksLikeTorchSave(llvm::ArrayRef<uint8_t> bytes) {
  // Zip, or a legacy file: it starts with a protocol-2 pickle of torch's
  // magic number 0x1950a86a20f9469cfc6c (LONG1, 10 bytes).
  static constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c,
                                             0xfc, 0x9c, 0x46, 0xf9, 0x20,
                                             0x6a, 0xa8, 0x50, 0x19};
  return looksLikeZip(bytes) ||
         bytes.take_front(sizeof(kLegacyMagic)) == llvm::ArrayRef(kLegacyMagic);
}

llvm::Expected<std::unique_ptr<TorchCheckpoint>>
TorchCheckpoint::parse(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name) {
  if (!looksLikeZip(bytes)) {
    if (looksLikeTorchSave(bytes)) {
      return makeError(
          name + ": a legacy (pre-zip) torch.save file, written by torch < "
                 "1.6 or with _use_new_zipfile_serialization=False; moec "
                 "reads the zip format only: re-save it with a recent torch "
                 "(torch.save(torch.load(path, weights_only=True), path))");
    }
    return makeError(name + ": not a torch.save file (expected a zip "
                            "archive holding data.pkl)");
  }
  std::unique_ptr<TorchCheckpoint> file(new TorchCheckpoint());
  file->filePath = name.str();
  Reader reader(bytes, name);
  if (llvm::Error e = reader.read(file->all, file->meta, file->readNotes)) {
    return std::move(e);
  }
  return std::move(file);
}

llvm::Expected<std::unique_ptr<TorchCheckpoint>>
TorchCheckpoint::open(llvm::StringRef path) {
  return openFile<TorchCheckpoint>(path);
}

} // namespace moe::frontend
