//===- LoadModel.cpp - From a model path to a ModelDescription ------------===//
//
// Compiled with exceptions on (nlohmann_json).
//
//===----------------------------------------------------------------------===//

#include "frontends/family/LoadModel.h"

#include "frontends/checkpoint/Errors.h"

#include "frontends/checkpoint/OpenCheckpoint.h"
#include "frontends/family/Recognizer.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

namespace moe::frontend {

using json = nlohmann::json;

namespace {

llvm::Error error(const llvm::Twine &message) { return makeError(message); }

/// The files in `dir` whose names end with one of `suffixes`, sorted.
llvm::Expected<std::vector<std::string>>
filesEndingWith(llvm::StringRef dir, llvm::ArrayRef<llvm::StringRef> suffixes) {
  std::vector<std::string> found;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
       it.increment(ec)) {
    llvm::StringRef name(it->path());
    if (llvm::any_of(suffixes,
                     [&](llvm::StringRef s) { return name.ends_with(s); })) {
      found.push_back(it->path());
    }
  }
  if (ec) {
    return error(dir + ": " + ec.message());
  }
  std::sort(found.begin(), found.end());
  return found;
}

/// The weights file in a model directory, in the order publishers' loaders
/// prefer them: model.safetensors, model.safetensors.index.json (shards),
/// the only *.safetensors file, pytorch_model.bin, the only *.pt/*.pth/*.bin
/// file.
llvm::Expected<std::string> findWeights(llvm::StringRef dir) {
  struct Kind {
    std::vector<llvm::StringRef> preferred, suffixes;
  };
  const Kind kinds[] = {
      {{"model.safetensors", "model.safetensors.index.json"}, {".safetensors"}},
      {{"pytorch_model.bin"}, {".pt", ".pth", ".bin"}}};
  for (const Kind &kind : kinds) {
    for (llvm::StringRef name : kind.preferred) {
      llvm::SmallString<256> path(dir);
      llvm::sys::path::append(path, name);
      if (llvm::sys::fs::exists(path)) {
        return path.str().str();
      }
    }
    auto found = filesEndingWith(dir, kind.suffixes);
    if (!found) {
      return found.takeError();
    }
    if (found->size() == 1) {
      return found->front();
    }
    if (found->size() > 1) {
      llvm::SmallString<256> preferred(dir);
      llvm::sys::path::append(preferred, kind.preferred.front());
      return error(dir + ": several weights files (" +
                   llvm::join(*found, ", ") + ") and no " + preferred +
                   "; name the one to use");
    }
  }
  return error(dir + ": no weights found (expected model.safetensors, "
                     "pytorch_model.bin or one *.safetensors, *.pt, *.pth or "
                     "*.bin file)");
}

/// The model's config: the checkpoint's own entry when the family names one
/// and the checkpoint has it (torch training checkpoints carry their
/// config), else the family's config file beside the weights. `where` is
/// set to what it came from, for messages.
llvm::Expected<std::optional<json>> readConfig(const FamilyDescription &family,
                                               const TensorSource &tensors,
                                               llvm::StringRef dir,
                                               std::string &where) {
  std::string entry = family.root.value("config_checkpoint_entry", "");
  auto embedded = tensors.metadata().find(entry);
  llvm::StringRef text;
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  if (!entry.empty() && embedded != tensors.metadata().end()) {
    where = tensors.path() + " entry '" + entry + "'";
    text = embedded->second;
  } else {
    std::string configName = family.root.value("config_file", "config.json");
    llvm::SmallString<256> configPath(dir.empty() ? "." : dir);
    llvm::sys::path::append(configPath, configName);
    where = configPath.str().str();
    if (!llvm::sys::fs::exists(configPath)) {
      return std::nullopt;
    }
    auto file = llvm::MemoryBuffer::getFile(configPath);
    if (!file) {
      return error(configPath + ": " + file.getError().message());
    }
    buffer = std::move(*file);
    text = buffer->getBuffer();
  }
  json config;
  try {
    config = json::parse(text.begin(), text.end());
  } catch (const json::exception &e) {
    return error(where + ": not valid JSON: " + e.what());
  }
  if (!config.is_object()) {
    return error(where + ": expected a JSON object");
  }
  return config;
}

llvm::Expected<FamilyDescription> chooseFamily(const TensorSource &tensors,
                                               const LoadOptions &options) {
  const std::vector<FamilyDescription> &builtins = builtinFamilies();
  if (!options.family.empty()) {
    return resolveFamily(options.family);
  }
  std::vector<const FamilyDescription *> matches;
  std::vector<std::string> reasons;
  for (const FamilyDescription &family : builtins) {
    std::vector<std::string> missing = missingMatchTensors(family, tensors);
    if (missing.empty()) {
      matches.push_back(&family);
    } else {
      reasons.push_back(family.name + " needs " + llvm::join(missing, ", "));
    }
  }
  if (matches.size() == 1) {
    return *matches.front();
  }
  if (matches.empty()) {
    return error(tensors.path() + ": no known family matches its tensors (" +
                 llvm::join(reasons, "; ") +
                 "); pass --family=<name or description.json>");
  }
  std::vector<std::string> names;
  for (const FamilyDescription *family : matches) {
    names.push_back(family->name);
  }
  return error(tensors.path() + ": several families match (" +
               llvm::join(names, ", ") + "); pass --family=<name>");
}

} // namespace

llvm::Expected<FamilyDescription> resolveFamily(llvm::StringRef nameOrPath) {
  const std::vector<FamilyDescription> &builtins = builtinFamilies();
  for (const FamilyDescription &family : builtins) {
    if (family.name == nameOrPath) {
      return family;
    }
  }
  if (llvm::sys::fs::exists(nameOrPath)) {
    return loadFamilyDescription(nameOrPath);
  }
  std::vector<std::string> names;
  for (const FamilyDescription &family : builtins) {
    names.push_back(family.name);
  }
  return error("--family=" + nameOrPath + ": not a built-in family (" +
               llvm::join(names, ", ") + ") nor a description file");
}

llvm::Expected<LoadedModel> loadModel(llvm::StringRef path,
                                      const LoadOptions &options) {
  if (!llvm::sys::fs::exists(path)) {
    return error(path + ": no such file or directory");
  }
  std::string weightsPath = path.str();
  std::string dir = llvm::sys::path::parent_path(path).str();
  if (llvm::sys::fs::is_directory(path)) {
    auto found = findWeights(path);
    if (!found) {
      return found.takeError();
    }
    weightsPath = *found;
    dir = path.str();
  }
  auto file = openCheckpoint(weightsPath);
  if (!file) {
    return file.takeError();
  }

  auto family = chooseFamily(**file, options);
  if (!family) {
    return family.takeError();
  }
  std::string configPath;
  auto config = readConfig(*family, **file, dir, configPath);
  if (!config) {
    return config.takeError();
  }

  auto description = recognizeModel(*family, **file,
                                    *config ? &**config : nullptr, configPath);
  if (!description) {
    return description.takeError();
  }
  // What the reader decided comes first among the assumptions.
  description->notes.insert(description->notes.begin(),
                            (*file)->notes().begin(), (*file)->notes().end());
  LoadedModel model;
  model.inputFiles = (*file)->files();
  if (*config) {
    model.inputFiles.push_back(configPath);
  }
  if (!llvm::StringRef(family->source).starts_with("built-in:")) {
    model.inputFiles.push_back(family->source);
  }
  model.modelDir = dir;
  model.family = *family;
  model.tensors = std::move(*file);
  model.description = std::move(*description);
  return model;
}

} // namespace moe::frontend
