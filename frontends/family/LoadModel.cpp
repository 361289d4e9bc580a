//===- LoadModel.cpp - From a model path to a ModelDescription ------------===//
//
// Compiled with exceptions on (nlohmann_json).
//
//===----------------------------------------------------------------------===//

#include "frontends/family/LoadModel.h"

#include "frontends/checkpoint/Errors.h"

#include "frontends/family/Recognizer.h"
#include "frontends/safetensors/SafetensorsReader.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

namespace moe::frontend {

using json = nlohmann::json;

namespace {

llvm::Error error(const llvm::Twine &message) { return makeError(message); }

/// The weights file in a model directory: model.safetensors, else the only
/// *.safetensors file there.
llvm::Expected<std::string> findWeights(llvm::StringRef dir) {
  llvm::SmallString<256> preferred(dir);
  llvm::sys::path::append(preferred, "model.safetensors");
  if (llvm::sys::fs::exists(preferred)) {
    return preferred.str().str();
  }
  std::vector<std::string> found;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
       it.increment(ec)) {
    if (llvm::StringRef(it->path()).ends_with(".safetensors")) {
      found.push_back(it->path());
    }
  }
  if (ec) {
    return error(dir + ": " + ec.message());
  }
  if (found.size() == 1) {
    return found.front();
  }
  if (found.empty()) {
    return error(dir + ": no weights found (expected model.safetensors)");
  }
  std::sort(found.begin(), found.end());
  return error(dir +
               ": several *.safetensors files and no model.safetensors "
               "(" +
               llvm::join(found, ", ") + "); name the one to use");
}

llvm::Expected<FamilyDescription> chooseFamily(const TensorSource &tensors,
                                               const LoadOptions &options) {
  const std::vector<FamilyDescription> &builtins = builtinFamilies();
  if (!options.family.empty()) {
    for (const FamilyDescription &family : builtins) {
      if (family.name == options.family) {
        return family;
      }
    }
    if (llvm::sys::fs::exists(options.family)) {
      return loadFamilyDescription(options.family);
    }
    std::vector<std::string> names;
    for (const FamilyDescription &family : builtins) {
      names.push_back(family.name);
    }
    return error("--family=" + options.family + ": not a built-in family (" +
                 llvm::join(names, ", ") + ") nor a description file");
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
  if (!llvm::StringRef(weightsPath).ends_with(".safetensors")) {
    return error(weightsPath + ": unsupported weights file (expected "
                               "*.safetensors)");
  }
  auto file = SafetensorsFile::open(weightsPath);
  if (!file) {
    return file.takeError();
  }

  auto family = chooseFamily(**file, options);
  if (!family) {
    return family.takeError();
  }

  std::string configName = family->root.value("config_file", "config.json");
  llvm::SmallString<256> configPath(dir.empty() ? "." : dir);
  llvm::sys::path::append(configPath, configName);
  json config;
  bool haveConfig = false;
  if (llvm::sys::fs::exists(configPath)) {
    auto buffer = llvm::MemoryBuffer::getFile(configPath);
    if (!buffer) {
      return error(configPath + ": " + buffer.getError().message());
    }
    llvm::StringRef text = (*buffer)->getBuffer();
    try {
      config = json::parse(text.begin(), text.end());
    } catch (const json::exception &e) {
      return error(configPath + ": not valid JSON: " + e.what());
    }
    if (!config.is_object()) {
      return error(configPath + ": expected a JSON object");
    }
    haveConfig = true;
  }

  auto description = recognizeModel(*family, **file,
                                    haveConfig ? &config : nullptr, configPath);
  if (!description) {
    return description.takeError();
  }
  LoadedModel model;
  model.tensors = std::move(*file);
  model.description = std::move(*description);
  return model;
}

} // namespace moe::frontend
