//===- ShardedSafetensors.cpp - A checkpoint split over shards ------------===//
//
// Compiled with exceptions on (nlohmann_json); none escapes this file.
//
//===----------------------------------------------------------------------===//

#include "frontends/safetensors/ShardedSafetensors.h"

#include "frontends/checkpoint/Errors.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace moe::frontend {

using json = nlohmann::json;

llvm::Expected<std::unique_ptr<ShardedSafetensors>>
ShardedSafetensors::open(llvm::StringRef indexPath) {
  auto fail = [&](const llvm::Twine &what) {
    return makeError(indexPath + ": " + what);
  };
  auto buffer = llvm::MemoryBuffer::getFile(indexPath);
  if (!buffer) {
    return fail(buffer.getError().message());
  }
  llvm::StringRef text = (*buffer)->getBuffer();
  // Tensor name -> shard file name, as the index spells them.
  std::map<std::string, std::string> weightMap;
  try {
    json index = json::parse(text.begin(), text.end());
    if (!index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return fail("expected an object with a 'weight_map' object");
    }
    for (auto &[name, file] : index["weight_map"].items()) {
      if (!file.is_string()) {
        return fail("weight_map['" + name + "'] is not a file name");
      }
      weightMap[name] = file.get<std::string>();
    }
  } catch (const json::exception &e) {
    return fail(llvm::Twine("not valid JSON: ") + e.what());
  }
  if (weightMap.empty()) {
    return fail("weight_map is empty");
  }

  std::unique_ptr<ShardedSafetensors> source(new ShardedSafetensors());
  source->indexPath = indexPath.str();
  std::map<std::string, size_t> shardIndex;
  llvm::StringRef dir = llvm::sys::path::parent_path(indexPath);
  for (auto &[name, file] : weightMap) {
    if (shardIndex.count(file)) {
      continue;
    }
    // Shards live beside the index: a name that climbs out is refused.
    if (file.empty() || llvm::StringRef(file).contains('/') ||
        llvm::StringRef(file).contains('\\') || file == "." || file == "..") {
      return fail("weight_map['" + name + "'] = '" + file +
                  "' is not a file name beside the index");
    }
    llvm::SmallString<256> shardPath(dir);
    llvm::sys::path::append(shardPath, file);
    auto shard = SafetensorsFile::open(shardPath);
    if (!shard) {
      return fail("shard '" + file + "': " + llvm::toString(shard.takeError()));
    }
    shardIndex[file] = source->shards.size();
    source->shards.push_back(std::move(*shard));
  }
  for (auto &[file, index] : shardIndex) {
    const SafetensorsFile &shard = *source->shards[index];
    for (const TensorInfo &tensor : shard.tensors()) {
      auto mapped = weightMap.find(tensor.name);
      if (mapped == weightMap.end()) {
        return fail("shard '" + file + "' holds '" + tensor.name +
                    "', which the weight_map does not list");
      }
      if (mapped->second != file) {
        return fail("shard '" + file + "' holds '" + tensor.name +
                    "', which the weight_map puts in '" + mapped->second + "'");
      }
      source->all.push_back(tensor);
    }
  }
  for (auto &[name, file] : weightMap) {
    if (!source->shards[shardIndex[file]]->find(name)) {
      return fail("weight_map puts '" + name + "' in '" + file +
                  "', which does not hold it");
    }
  }
  std::sort(
      source->all.begin(), source->all.end(),
      [](const TensorInfo &a, const TensorInfo &b) { return a.name < b.name; });
  source->readNotes.push_back(llvm::formatv("{0}: {1} tensors in {2} shards",
                                            indexPath, source->all.size(),
                                            source->shards.size()));
  return source;
}

std::vector<std::string> ShardedSafetensors::files() const {
  std::vector<std::string> paths{indexPath};
  for (const auto &shard : shards) {
    paths.push_back(shard->path());
  }
  return paths;
}

} // namespace moe::frontend
