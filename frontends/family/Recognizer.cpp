//===- Recognizer.cpp - Family descriptions and the recogniser ------------===//
//
// Algorithm (recognizeModel):
//   1. Map the checkpoint's keys to stripped names (`strip_prefixes`),
//      refusing two keys that strip to the same name.
//   2. Count layers: the largest n such that `layer_count_from` exists for
//      every i < n.
//   3. Evaluate `dims` lazily from tensor shapes: a dim is computed when a
//      shape check, a setting or the architecture first needs it, so a dim
//      of a role the checkpoint lacks (no MoE layer, say) is only an error
//      if something uses it.
//   4. Decide whether config.json is trusted: every `config_agrees` key it
//      has must equal the dim the tensors give. Settings then come from the
//      config when trusted, else from the description's default; each
//      choice becomes a note.
//   5. Bind every role of every layer, checking presence, dtype and shape,
//      and build the layer's variant from `architecture`.
//   6. Report checkpoint tensors no role used.
//
// This file is compiled with exceptions on, for nlohmann_json; none escapes.
//
//===----------------------------------------------------------------------===//

#include "frontends/family/Recognizer.h"

#include "frontends/checkpoint/Errors.h"

#include "frontends/family/Expr.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

using json = nlohmann::json;

namespace moe::frontend {

namespace {

llvm::Error error(const llvm::Twine &message) { return makeError(message); }

std::string shapeText(llvm::ArrayRef<int64_t> shape) {
  return "[" +
         llvm::join(llvm::map_range(
                        shape, [](int64_t d) { return std::to_string(d); }),
                    ", ") +
         "]";
}

/// The largest model size (a dimension, a context length) taken from a
/// description or a config: larger ones are refused before any conversion
/// or allocation.
constexpr double kLargestSize = 1e15;

std::string numberText(double value) {
  if (value == std::floor(value) && std::abs(value) < 1e15) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

/// Replaces `{i}` in a name template by the layer index and `{e}` by the
/// expert index.
std::string instantiate(llvm::StringRef pattern, int64_t layer,
                        int64_t expert = 0) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern.substr(i).starts_with("{i}")) {
      out += std::to_string(layer);
      i += 2;
    } else if (pattern.substr(i).starts_with("{e}")) {
      out += std::to_string(expert);
      i += 2;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

/// Glob match with `*` only, for `ignore` patterns.
bool globMatch(llvm::StringRef pattern, llvm::StringRef text) {
  size_t star = pattern.find('*');
  if (star == llvm::StringRef::npos) {
    return pattern == text;
  }
  llvm::StringRef head = pattern.take_front(star);
  if (!text.starts_with(head)) {
    return false;
  }
  llvm::StringRef rest = pattern.drop_front(star + 1);
  for (size_t i = head.size(); i <= text.size(); ++i) {
    if (globMatch(rest, text.drop_front(i))) {
      return true;
    }
  }
  return false;
}

/// Strips the listed prefixes (repeatedly, so `_orig_mod.module.` goes too).
std::string stripPrefixes(llvm::StringRef name, const json &prefixes) {
  bool stripped = true;
  while (stripped) {
    stripped = false;
    for (const json &prefix : prefixes) {
      if (prefix.is_string() &&
          name.starts_with(prefix.get_ref<const std::string &>()) &&
          name.size() > prefix.get_ref<const std::string &>().size()) {
        name = name.drop_front(prefix.get_ref<const std::string &>().size());
        stripped = true;
      }
    }
  }
  return name.str();
}

const json kEmptyArray = json::array();

const json &arrayOrEmpty(const json &object, const char *key) {
  auto it = object.find(key);
  return it != object.end() && it->is_array() ? *it : kEmptyArray;
}

//===----------------------------------------------------------------------===//
// One application of a description to a checkpoint
//===----------------------------------------------------------------------===//

class Recognition {
public:
  Recognition(const FamilyDescription &family, const TensorSource &tensors,
              const json *config, llvm::StringRef configPath)
      : family(family), root(family.root), tensors(tensors), config(config),
        configPath(configPath.str()) {}

  llvm::Expected<ModelDescription> run();

private:
  // Errors about the description itself name its source and the JSON path.
  llvm::Error descError(llvm::StringRef path, const llvm::Twine &what) const {
    return error(family.source + ": " + path + ": " + what);
  }
  // Errors about the checkpoint name the weights file.
  llvm::Error ckptError(const llvm::Twine &what) const {
    return error(tensors.path() + ": " + what);
  }

  llvm::Error mapNames();
  /// Counts the layers from `layer_count_from`, or takes the passes a
  /// checkpoint's metadata lists (`layer_passes_metadata`).
  llvm::Error countLayers();
  llvm::Expected<double> lookup(llvm::StringRef name);
  llvm::Expected<double> callFunction(llvm::StringRef function,
                                      const std::vector<ExprArg> &args);
  llvm::Expected<double> evaluate(const json &value, llvm::StringRef path);
  llvm::Expected<int64_t> evaluateInt(const json &value, llvm::StringRef path);
  llvm::Error decideConfigTrust();
  llvm::Expected<double> setting(llvm::StringRef name);

  const json *roleDefinition(llvm::StringRef role, bool &perLayer) const;
  const TensorInfo *roleTensor(llvm::StringRef role, int64_t layer,
                               std::string *key = nullptr) const;
  /// The tensor whose name is `stripped` once prefixes are stripped; its
  /// checkpoint key goes to `key`.
  const TensorInfo *tensorNamed(llvm::StringRef stripped,
                                std::string *key = nullptr) const;
  llvm::Expected<std::optional<WeightRef>> bindRole(llvm::StringRef role,
                                                    int64_t layer,
                                                    bool required,
                                                    llvm::StringRef usePath);
  /// Adds experts 1..n-1 of a role whose name has {e} to `ref`.
  llvm::Error stackExperts(const json &def, llvm::StringRef defPath,
                           int64_t layer, const TensorInfo &first,
                           WeightRef &ref);
  /// The role's "shape", each dimension evaluated.
  llvm::Expected<std::vector<int64_t>> roleShape(const json &def,
                                                 const std::string &defPath);
  /// Binds a role marked "packed" from `{name}__bin`/`{name}__int4` codes
  /// with `{name}__scale`, `{name}__shape` and `{name}__cols`, each checked
  /// against the role's logical "shape". Null when the codes are absent.
  llvm::Expected<std::optional<WeightRef>>
  bindPacked(const json &def, const std::string &defPath,
             const std::vector<std::string> &patterns, int64_t layer,
             bool perLayer, const std::string &where);
  /// The `{name}__shape` values of a packed role's first tensor, if any.
  std::optional<std::vector<int64_t>> packedShape(llvm::StringRef role,
                                                  int64_t layer) const;
  /// The description's "packing" conventions, parsed once.
  llvm::Expected<PackedWeight> packingConventions(PackedFormat format);
  /// Restricts `ref` to the role's "rows".
  llvm::Error selectRows(const json &def, llvm::StringRef defPath,
                         WeightRef &ref);
  llvm::Expected<WeightRef> bindRequired(const json &object, const char *key,
                                         int64_t layer, llvm::StringRef path);
  llvm::Expected<std::optional<WeightRef>> bindOptional(const json &object,
                                                        const char *key,
                                                        int64_t layer,
                                                        llvm::StringRef path);

  // Reading the architecture section.
  llvm::Expected<const json *> object(const json &parent, const char *key,
                                      llvm::StringRef path, bool required);
  llvm::Expected<std::string> string(const json &parent, const char *key,
                                     llvm::StringRef path);
  template <typename EnumT>
  llvm::Expected<EnumT>
  enumField(const json &parent, const char *key, llvm::StringRef path,
            llvm::ArrayRef<std::pair<const char *, EnumT>> choices,
            std::optional<EnumT> fallback = std::nullopt);
  llvm::Expected<double> number(const json &parent, const char *key,
                                llvm::StringRef path,
                                std::optional<double> fallback = std::nullopt);

  llvm::Expected<NormDesc> norm(const json &object, int64_t layer,
                                llvm::StringRef path);
  llvm::Expected<AttentionDesc> attention(const json &object, int64_t layer,
                                          llvm::StringRef path);
  llvm::Expected<FfnDesc> ffn(const json &object, int64_t layer,
                              llvm::StringRef path);
  llvm::Expected<MoEDesc> moe(const json &object, int64_t layer,
                              llvm::StringRef path);
  llvm::Expected<LayerDesc> layer(int64_t index);

  const FamilyDescription &family;
  const json &root;
  const TensorSource &tensors;
  const json *config;
  std::string configPath;

  llvm::StringMap<std::string> strippedToKey;
  int64_t numLayers = 0;
  /// The stored layer each pass runs (names use it): 0..n-1 unless the
  /// checkpoint's metadata orders them.
  std::vector<int64_t> layerIds;
  std::map<std::string, double> values;
  std::set<std::string> evaluating;
  bool configTrusted = false;
  std::set<std::string> boundKeys;
  std::optional<PackedWeight> sign1Packing, int4Packing;
  /// Roles whose first name was missing, already noted.
  std::set<std::string> notedFallbacks;
  std::vector<std::string> notes;
};

llvm::Error Recognition::mapNames() {
  const json &prefixes = arrayOrEmpty(root, "strip_prefixes");
  std::map<std::string, size_t> strippedCounts;
  for (const TensorInfo &tensor : tensors.tensors()) {
    std::string stripped = stripPrefixes(tensor.name, prefixes);
    auto [it, inserted] = strippedToKey.try_emplace(stripped, tensor.name);
    if (!inserted) {
      return ckptError(llvm::formatv(
          "tensors '{0}' and '{1}' are the same tensor once the prefixes {2} "
          "are stripped",
          it->second, tensor.name, prefixes.dump()));
    }
    if (stripped != tensor.name) {
      ++strippedCounts[tensor.name.substr(0, tensor.name.size() -
                                                 stripped.size())];
    }
  }
  for (auto &[prefix, count] : strippedCounts) {
    notes.push_back(llvm::formatv("stripped the prefix '{0}' from {1} tensor "
                                  "names",
                                  prefix, count));
  }
  return llvm::Error::success();
}

llvm::Error Recognition::countLayers() {
  std::string pattern = root.value("layer_count_from", "");
  // Without {i} every layer names the same tensor, and counting would not
  // end (found by fuzz_family: "blocks.{e}.attn_norm.weight").
  if (pattern.find("{i}") == std::string::npos) {
    return descError("layer_count_from",
                     "'" + pattern + "' has no {i} for the layer index");
  }
  while (strippedToKey.count(instantiate(pattern, numLayers))) {
    ++numLayers;
  }
  for (int64_t i = 0; i < numLayers; ++i) {
    layerIds.push_back(i);
  }
  // A checkpoint may run its stored layers in another order, some twice
  // (SSMoELM-it-5L: pass_order [0, 1, 2, 3, 3, 5] over layers 0-3 and 5).
  std::string key = root.value("layer_passes_metadata", "");
  auto entry =
      key.empty() ? tensors.metadata().end() : tensors.metadata().find(key);
  if (entry == tensors.metadata().end()) {
    return llvm::Error::success();
  }
  json order = json::parse(entry->second, nullptr, /*allow_exceptions=*/false);
  if (!order.is_array() || order.empty()) {
    return ckptError(llvm::formatv("metadata '{0}' = {1}: expected a list of "
                                   "layer indices",
                                   key, entry->second));
  }
  layerIds.clear();
  for (const json &id : order) {
    if (!id.is_number_integer() ||
        !strippedToKey.count(instantiate(pattern, id.get<int64_t>()))) {
      return ckptError(llvm::formatv(
          "metadata '{0}' = {1} names layer {2}, which has no tensor '{3}'",
          key, entry->second, id.dump(),
          instantiate(pattern,
                      id.is_number_integer() ? id.get<int64_t>() : -1)));
    }
    layerIds.push_back(id.get<int64_t>());
  }
  numLayers = static_cast<int64_t>(layerIds.size());
  notes.push_back(llvm::formatv(
      "metadata '{0}' = {1}: {2} passes over the stored layers, each pass "
      "with its own KV cache",
      key, entry->second, numLayers));
  return llvm::Error::success();
}

const json *Recognition::roleDefinition(llvm::StringRef role,
                                        bool &perLayer) const {
  for (auto [section, layered] :
       {std::pair("tensors", false), std::pair("layer_tensors", true)}) {
    auto it = root.find(section);
    if (it != root.end() && it->is_object()) {
      auto def = it->find(role.str());
      if (def != it->end()) {
        perLayer = layered;
        return &*def;
      }
    }
  }
  return nullptr;
}

/// The name patterns of a role: its `name`, or each of a list of names
/// (the first the checkpoint has is used, e.g. either copy of a tied
/// weight). Empty when `name` is neither.
static std::vector<std::string> namePatterns(const json &def) {
  std::vector<std::string> names;
  auto it = def.find("name");
  if (it == def.end()) {
    return names;
  }
  if (it->is_string()) {
    names.push_back(it->get<std::string>());
    return names;
  }
  if (it->is_array()) {
    for (const json &name : *it) {
      if (!name.is_string()) {
        return {};
      }
      names.push_back(name.get<std::string>());
    }
  }
  return names;
}

const TensorInfo *Recognition::roleTensor(llvm::StringRef role, int64_t layer,
                                          std::string *key) const {
  bool perLayer = false;
  const json *def = roleDefinition(role, perLayer);
  if (!def || !def->is_object()) {
    return nullptr;
  }
  for (const std::string &pattern : namePatterns(*def)) {
    if (const TensorInfo *tensor =
            tensorNamed(instantiate(pattern, perLayer ? layer : 0), key)) {
      return tensor;
    }
  }
  return nullptr;
}

const TensorInfo *Recognition::tensorNamed(llvm::StringRef stripped,
                                           std::string *key) const {
  auto it = strippedToKey.find(stripped);
  if (it == strippedToKey.end()) {
    return nullptr;
  }
  if (key) {
    *key = it->second;
  }
  return tensors.find(it->second);
}

llvm::Expected<double>
Recognition::callFunction(llvm::StringRef function,
                          const std::vector<ExprArg> &args) {
  if (function != "shape") {
    return error("unknown function '" + function +
                 "' (expected sqrt, pow, min, max or shape)");
  }
  if (args.size() != 2 || !std::holds_alternative<std::string>(args[0]) ||
      !std::holds_alternative<double>(args[1])) {
    return error("shape takes a role name and a dimension: shape(role, k)");
  }
  const std::string &role = std::get<std::string>(args[0]);
  double dimValue = std::get<double>(args[1]);
  // Checked before the conversion, which is undefined for NaN and for
  // values past int64_t (found by test/fuzz/fuzz_family).
  if (!(dimValue >= 0 && dimValue < 64) || dimValue != std::floor(dimValue)) {
    return error("shape(" + role +
                 ", k): k must be a dimension index 0, 1, "
                 "2, ..., got " +
                 numberText(dimValue));
  }
  const int64_t dim = static_cast<int64_t>(dimValue);
  bool perLayer = false;
  if (!roleDefinition(role, perLayer)) {
    return error("shape() names '" + role +
                 "', which is not a role of 'tensors' or 'layer_tensors'");
  }
  // A per-layer role takes its shape from the first layer that has it.
  for (int64_t pass = 0; pass < (perLayer ? numLayers : 1); ++pass) {
    int64_t layer = perLayer ? layerIds[pass] : 0;
    std::string key;
    if (const TensorInfo *tensor = roleTensor(role, layer, &key)) {
      if (dim >= static_cast<int64_t>(tensor->shape.size())) {
        return error(llvm::formatv("tensor '{0}' has no dimension {1}: its "
                                   "shape is {2}",
                                   key, dim, shapeText(tensor->shape)));
      }
      return static_cast<double>(tensor->shape[dim]);
    }
    if (auto shape = packedShape(role, layer)) {
      if (dim >= static_cast<int64_t>(shape->size())) {
        return error(
            llvm::formatv("packed role '{0}' has no dimension {1}", role, dim));
      }
      return static_cast<double>((*shape)[dim]);
    }
  }
  return error("the checkpoint has no tensor for role '" + role + "'");
}

llvm::Expected<double> Recognition::lookup(llvm::StringRef name) {
  auto cached = values.find(name.str());
  if (cached != values.end()) {
    return cached->second;
  }
  if (name == "n_layers") {
    return static_cast<double>(numLayers);
  }
  if (!evaluating.insert(name.str()).second) {
    return error("'" + name + "' is defined in terms of itself");
  }
  llvm::Expected<double> result = error("");
  auto dims = root.find("dims");
  if (dims != root.end() && dims->contains(name.str())) {
    result = evaluate((*dims)[name.str()], ("dims." + name).str());
  } else {
    auto settings = root.find("settings");
    if (settings != root.end() && settings->contains(name.str())) {
      result = setting(name);
    } else {
      llvm::consumeError(result.takeError());
      result = error("unknown name '" + name + "' (not in dims or settings)");
    }
  }
  evaluating.erase(name.str());
  if (result) {
    values[name.str()] = *result;
  }
  return result;
}

llvm::Expected<double> Recognition::evaluate(const json &value,
                                             llvm::StringRef path) {
  if (value.is_number()) {
    return value.get<double>();
  }
  if (!value.is_string()) {
    return descError(path, "expected a number or an expression string");
  }
  ExprEnv env;
  env.lookup = [this](llvm::StringRef name) { return lookup(name); };
  env.call = [this](llvm::StringRef function,
                    const std::vector<ExprArg> &args) {
    return callFunction(function, args);
  };
  auto result = evaluateExpr(value.get<std::string>(), env);
  if (!result) {
    return descError(path, llvm::toString(result.takeError()));
  }
  return result;
}

llvm::Expected<int64_t> Recognition::evaluateInt(const json &value,
                                                 llvm::StringRef path) {
  auto result = evaluate(value, path);
  if (!result) {
    return result.takeError();
  }
  if (*result != std::floor(*result) || std::abs(*result) > 1e15) {
    return descError(path,
                     "expected a whole number, got " + numberText(*result));
  }
  return static_cast<int64_t>(*result);
}

llvm::Error Recognition::decideConfigTrust() {
  if (!config) {
    notes.push_back("no config.json: settings take the family defaults");
    return llvm::Error::success();
  }
  configTrusted = true;
  auto agrees = root.find("config_agrees");
  if (agrees == root.end() || !agrees->is_object()) {
    notes.push_back("config.json trusted (the description lists no fields "
                    "to check it against)");
    return llvm::Error::success();
  }
  std::vector<std::string> disagreements;
  for (auto it = agrees->begin(); it != agrees->end(); ++it) {
    auto field = config->find(it.key());
    if (field == config->end() || field->is_null()) {
      continue;
    }
    // A size that is not a number is a broken config, not one describing
    // another model: say so rather than fall back to the defaults.
    if (!field->is_number()) {
      return error(configPath + ": '" + it.key() +
                   "' should be a number, got " + field->dump());
    }
    auto dim = evaluate(it.value(), "config_agrees." + it.key());
    if (!dim) {
      // A dim the checkpoint cannot show (no MoE layer) cannot disagree.
      llvm::consumeError(dim.takeError());
      continue;
    }
    if (field->get<double>() != *dim) {
      disagreements.push_back(llvm::formatv("{0} = {1}, tensors say {2}",
                                            it.key(), field->dump(),
                                            numberText(*dim)));
    }
  }
  if (!disagreements.empty()) {
    configTrusted = false;
    notes.push_back(configPath + " disagrees with the tensors (" +
                    llvm::join(disagreements, "; ") +
                    "): it is ignored and settings take the family defaults");
  } else {
    notes.push_back(configPath + " agrees with the tensors: settings it "
                                 "holds are used");
  }
  return llvm::Error::success();
}

llvm::Expected<double> Recognition::setting(llvm::StringRef name) {
  std::string path = ("settings." + name).str();
  // Found, not indexed: a const json's operator[] with a missing key is
  // undefined behaviour (evaluate() calls this only for names it found).
  const json &settings = root["settings"]; // checked to be an object
  auto found = settings.find(name.str());
  const json &def = found != settings.end() ? *found : kEmptyArray;
  if (!def.is_object()) {
    return descError(path, "expected an object with 'value', or 'config' "
                           "and 'default'");
  }
  if (def.contains("value")) {
    auto value = evaluate(def["value"], path + ".value");
    if (value && def["value"].is_string()) {
      notes.push_back(llvm::formatv("{0} = {1} ({2})", name, numberText(*value),
                                    def["value"].get<std::string>()));
    }
    return value;
  }
  if (!def.contains("default")) {
    return descError(path, "expected 'default' (or 'value')");
  }
  std::string why = def.value("why", "");
  std::string because = why.empty() ? "" : " (" + why + ")";
  if (configTrusted && def.contains("config") && def["config"].is_string()) {
    std::string key = def["config"].get<std::string>();
    auto field = config->find(key);
    if (field != config->end()) {
      if (!field->is_number()) {
        return error(configPath + ": '" + key + "' should be a number, got " +
                     field->dump());
      }
      notes.push_back(llvm::formatv("{0} = {1} (config '{2}')", name,
                                    numberText(field->get<double>()), key));
      return field->get<double>();
    }
  }
  auto value = evaluate(def["default"], path + ".default");
  if (value) {
    notes.push_back(llvm::formatv("{0} = {1} (family default{2})", name,
                                  numberText(*value), because));
  }
  return value;
}

//===----------------------------------------------------------------------===//
// Roles
//===----------------------------------------------------------------------===//

llvm::Expected<std::optional<WeightRef>>
Recognition::bindRole(llvm::StringRef role, int64_t layer, bool required,
                      llvm::StringRef usePath) {
  bool perLayer = false;
  const json *def = roleDefinition(role, perLayer);
  if (!def) {
    return descError(usePath, "names the role '" + role +
                                  "', which is not in 'tensors' or "
                                  "'layer_tensors'");
  }
  std::string defPath = (perLayer ? "layer_tensors." : "tensors.") + role.str();
  std::vector<std::string> patterns =
      def->is_object() ? namePatterns(*def) : std::vector<std::string>();
  if (patterns.empty()) {
    return descError(defPath, "expected an object whose 'name' is a string "
                              "or a list of strings");
  }
  if (patterns.size() > 1 && def->contains("stack")) {
    return descError(defPath, "a stacked role takes one 'name' pattern");
  }
  std::string where = perLayer
                          ? llvm::formatv("layer {0}: {1}", layer, role).str()
                          : role.str();
  std::string key;
  const TensorInfo *tensor = roleTensor(role, layer, &key);
  if (!tensor && def->value("packed", false)) {
    auto packed = bindPacked(*def, defPath, patterns, layer, perLayer, where);
    if (!packed || *packed) {
      return packed;
    }
  }
  if (!tensor) {
    if (required || !def->value("optional", false)) {
      std::vector<std::string> names;
      for (const std::string &pattern : patterns) {
        names.push_back(instantiate(pattern, perLayer ? layer : 0));
      }
      return ckptError("missing tensor '" + llvm::join(names, "' or '") +
                       "' (" + where + ")");
    }
    return std::nullopt;
  }
  if (!isConvertibleToF32(tensor->dtype)) {
    return ckptError("tensor '" + key + "' (" + where + ") has dtype " +
                     dtypeName(tensor->dtype) +
                     "; expected a float dtype (F32, F16, BF16, F64, "
                     "F8_E4M3, F8_E5M2)");
  }
  // Say when a later name of the list was used (once per role).
  if (patterns.size() > 1 &&
      !tensorNamed(instantiate(patterns.front(), perLayer ? layer : 0)) &&
      notedFallbacks.insert(role.str()).second) {
    notes.push_back(llvm::formatv("{0}: no '{1}' tensor, using '{2}'", defPath,
                                  instantiate(patterns.front(), layer), key));
  }
  WeightRef ref;
  ref.sources = {key};
  ref.role = where;
  ref.shape.assign(tensor->shape.begin(), tensor->shape.end());
  if (def->contains("shape")) {
    auto expected = roleShape(*def, defPath);
    if (!expected) {
      return expected.takeError();
    }
    if (*expected != ref.shape) {
      std::vector<std::string> spelled;
      for (const json &dim : (*def)["shape"]) {
        spelled.push_back(dim.is_string() ? dim.get<std::string>()
                                          : dim.dump());
      }
      return ckptError(llvm::formatv(
          "tensor '{0}' ({1}) has shape {2}, expected [{3}] = {4}", key, where,
          shapeText(ref.shape), llvm::join(spelled, ", "),
          shapeText(*expected)));
    }
  }
  boundKeys.insert(key);
  if (def->contains("stack")) {
    if (auto err = stackExperts(*def, defPath, layer, *tensor, ref)) {
      return std::move(err);
    }
  }
  if (def->contains("rows")) {
    if (auto err = selectRows(*def, defPath, ref)) {
      return std::move(err);
    }
  }
  return std::optional<WeightRef>(std::move(ref));
}

llvm::Error Recognition::stackExperts(const json &def, llvm::StringRef defPath,
                                      int64_t layer, const TensorInfo &first,
                                      WeightRef &ref) {
  auto count = evaluateInt(def["stack"], (defPath + ".stack").str());
  if (!count) {
    return count.takeError();
  }
  // One pattern (bindRole checks it), as a string or a list of one.
  std::string pattern = namePatterns(def).front();
  if (pattern.find("{e}") == std::string::npos || *count < 1) {
    return descError((defPath + ".stack").str(),
                     "stacks tensors whose 'name' has an {e} (expert index), "
                     "at least one of them");
  }
  for (int64_t e = 1; e < *count; ++e) {
    std::string name = instantiate(pattern, layer, e);
    std::string key;
    const TensorInfo *tensor = tensorNamed(name, &key);
    if (!tensor) {
      return ckptError(llvm::formatv("missing tensor '{0}' ({1}, expert {2} "
                                     "of {3})",
                                     name, ref.role, e, *count));
    }
    if (tensor->shape != first.shape || tensor->dtype != first.dtype) {
      return ckptError(llvm::formatv(
          "tensor '{0}' ({1}, expert {2}) is {3} {4}; expert 0 is {5} {6}", key,
          ref.role, e, dtypeName(tensor->dtype), shapeText(tensor->shape),
          dtypeName(first.dtype), shapeText(first.shape)));
    }
    ref.sources.push_back(key);
    boundKeys.insert(key);
  }
  ref.shape.insert(ref.shape.begin(), *count);
  return llvm::Error::success();
}

llvm::Expected<std::vector<int64_t>>
Recognition::roleShape(const json &def, const std::string &defPath) {
  const json &shape = def["shape"];
  if (!shape.is_array()) {
    return descError(defPath + ".shape", "expected an array");
  }
  std::vector<int64_t> dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    auto dim =
        evaluateInt(shape[i], defPath + ".shape[" + std::to_string(i) + "]");
    if (!dim) {
      return dim.takeError();
    }
    dims.push_back(*dim);
  }
  return dims;
}

/// The integer values of a small I32/I64 tensor (packed metadata).
static std::optional<std::vector<int64_t>> integers(const TensorInfo &tensor) {
  std::vector<int64_t> values;
  if (tensor.dtype != DType::I32 && tensor.dtype != DType::I64) {
    return std::nullopt;
  }
  size_t width = tensor.dtype == DType::I32 ? 4 : 8;
  for (size_t at = 0; at + width <= tensor.bytes.size(); at += width) {
    if (width == 4) {
      int32_t v;
      std::memcpy(&v, tensor.bytes.data() + at, 4);
      values.push_back(v);
    } else {
      int64_t v;
      std::memcpy(&v, tensor.bytes.data() + at, 8);
      values.push_back(v);
    }
  }
  return values;
}

std::optional<std::vector<int64_t>>
Recognition::packedShape(llvm::StringRef role, int64_t layer) const {
  bool perLayer = false;
  const json *def = roleDefinition(role, perLayer);
  if (!def || !def->is_object() || !def->value("packed", false)) {
    return std::nullopt;
  }
  for (const std::string &pattern : namePatterns(*def)) {
    std::string name = instantiate(pattern, perLayer ? layer : 0);
    if (const TensorInfo *shape = tensorNamed(name + "__shape")) {
      auto values = integers(*shape);
      if (values && values->size() == 2) {
        return values;
      }
    }
  }
  return std::nullopt;
}

llvm::Expected<PackedWeight>
Recognition::packingConventions(PackedFormat format) {
  std::optional<PackedWeight> &cached =
      format == PackedFormat::Sign1 ? sign1Packing : int4Packing;
  if (cached) {
    return *cached;
  }
  static const json kEmpty = json::object();
  auto it = root.find("packing");
  const json &packing = it != root.end() && it->is_object() ? *it : kEmpty;
  PackedWeight p;
  p.format = format;
  if (format == PackedFormat::Sign1) {
    auto order =
        enumField<bool>(packing, "sign1_bit_order", "packing",
                        {{"msb_first", false}, {"lsb_first", true}}, false);
    if (!order) {
      return order.takeError();
    }
    p.lowBitsFirst = *order;
    notes.push_back(
        llvm::formatv("1-bit codes: the first weight in the {0} significant "
                      "bit of its byte, bit 1 = +1 (packing."
                      "sign1_bit_order)",
                      p.lowBitsFirst ? "least" : "most"));
  } else {
    auto order =
        enumField<bool>(packing, "int4_nibble_order", "packing",
                        {{"low_first", true}, {"high_first", false}}, true);
    auto code =
        enumField<bool>(packing, "int4_code", "packing",
                        {{"twos_complement", false}, {"offset8", true}}, false);
    if (!order) {
      return order.takeError();
    }
    if (!code) {
      return code.takeError();
    }
    p.lowBitsFirst = *order;
    p.offsetBinary = *code;
    notes.push_back(llvm::formatv(
        "4-bit codes: the first weight in the {0} nibble, {1} (packing."
        "int4_nibble_order, packing.int4_code)",
        p.lowBitsFirst ? "low" : "high",
        p.offsetBinary ? "nibble - 8" : "two's complement"));
  }
  cached = p;
  return p;
}

llvm::Expected<std::optional<WeightRef>>
Recognition::bindPacked(const json &def, const std::string &defPath,
                        const std::vector<std::string> &patterns, int64_t layer,
                        bool perLayer, const std::string &where) {
  if (def.contains("rows")) {
    return descError(defPath, "a packed role cannot take 'rows'");
  }
  // The first name whose codes the checkpoint has.
  std::string pattern;
  for (const std::string &candidate : patterns) {
    std::string name = instantiate(candidate, perLayer ? layer : 0);
    if (tensorNamed(name + "__bin") || tensorNamed(name + "__int4")) {
      pattern = candidate;
      break;
    }
  }
  if (pattern.empty()) {
    // Packed another way (SSMoELM-it-5L's 3-bit embedding): say so rather
    // than call the tensor missing.
    for (const std::string &candidate : patterns) {
      std::string prefix = instantiate(candidate, perLayer ? layer : 0) + "__";
      for (const auto &entry : strippedToKey) {
        llvm::StringRef suffix = entry.getKey();
        if (!suffix.consume_front(prefix) || suffix == "scale" ||
            suffix == "shape" || suffix == "cols") {
          continue;
        }
        return ckptError(llvm::formatv(
            "tensor '{0}' ({1}) holds '{2}' codes, a packing moec does not "
            "read (it reads __bin: 1 bit, __int4: 4 bits per weight)",
            entry.getValue(), where, suffix));
      }
    }
    return std::nullopt;
  }
  if (!def.contains("shape") || !def["shape"].is_array() ||
      def["shape"].size() != 2) {
    return descError(defPath, "a packed role needs its logical 'shape' "
                              "[rows, cols]");
  }
  auto shape = roleShape(def, defPath);
  if (!shape) {
    return shape.takeError();
  }
  const std::vector<int64_t> &logical = *shape;
  int64_t count = 1;
  if (def.contains("stack")) {
    auto n = evaluateInt(def["stack"], defPath + ".stack");
    if (!n) {
      return n.takeError();
    }
    count = *n;
    // As stackExperts: without {e} every expert would be the same tensor
    // (and a huge count an endless loop).
    if (pattern.find("{e}") == std::string::npos || count < 1) {
      return descError(defPath + ".stack",
                       "stacks tensors whose 'name' has an {e} (expert "
                       "index), at least one of them");
    }
  }
  WeightRef ref;
  ref.role = where;
  std::optional<PackedFormat> format;
  for (int64_t e = 0; e < count; ++e) {
    std::string name = instantiate(pattern, perLayer ? layer : 0, e);
    std::string codesKey, scaleKey, shapeKey, colsKey;
    const TensorInfo *bin = tensorNamed(name + "__bin", &codesKey);
    const TensorInfo *int4 =
        bin ? nullptr : tensorNamed(name + "__int4", &codesKey);
    const TensorInfo *scale = tensorNamed(name + "__scale", &scaleKey);
    const TensorInfo *shape = tensorNamed(name + "__shape", &shapeKey);
    const TensorInfo *cols = tensorNamed(name + "__cols", &colsKey);
    const TensorInfo *codes = bin ? bin : int4;
    if (!codes || !scale || !shape) {
      return ckptError(llvm::formatv(
          "packed tensor '{0}' ({1}) needs '{0}__bin' or '{0}__int4', "
          "'{0}__scale' and '{0}__shape'; missing: {2}{3}{4}",
          name, where, codes ? "" : "codes ", scale ? "" : "__scale ",
          shape ? "" : "__shape"));
    }
    PackedFormat f = bin ? PackedFormat::Sign1 : PackedFormat::Int4;
    if (format && *format != f) {
      return ckptError(llvm::formatv("packed tensor '{0}' ({1}) is {2}; "
                                     "expert 0 is {3}",
                                     name, where, bin ? "1-bit" : "4-bit",
                                     bin ? "4-bit" : "1-bit"));
    }
    format = f;
    auto shapeValues = integers(*shape);
    if (!shapeValues || *shapeValues != logical) {
      return ckptError(llvm::formatv(
          "tensor '{0}' ({1}) says the packed shape is {2}; expected {3}",
          shapeKey, where,
          shapeValues ? shapeText(*shapeValues) : dtypeName(shape->dtype),
          shapeText(logical)));
    }
    if (cols) {
      auto colsValues = integers(*cols);
      if (!colsValues || colsValues->size() != 1 ||
          (*colsValues)[0] != logical[1]) {
        return ckptError(llvm::formatv("tensor '{0}' ({1}) does not hold "
                                       "the column count {2}",
                                       colsKey, where, logical[1]));
      }
      boundKeys.insert(colsKey);
    }
    if (!isConvertibleToF32(scale->dtype) ||
        scale->numElements() != logical[0]) {
      return ckptError(llvm::formatv(
          "tensor '{0}' ({1}) is {2} {3}; expected {4} float scales, one "
          "per row",
          scaleKey, where, dtypeName(scale->dtype), shapeText(scale->shape),
          logical[0]));
    }
    int64_t bits = f == PackedFormat::Sign1 ? 1 : 4;
    int64_t bytes = (logical[0] * logical[1] * bits + 7) / 8;
    if (codes->dtype != DType::U8 || codes->numElements() != bytes) {
      return ckptError(llvm::formatv(
          "tensor '{0}' ({1}) is {2} {3}; {4} x {5} {6}-bit codes take {7} "
          "bytes (U8)",
          codesKey, where, dtypeName(codes->dtype), shapeText(codes->shape),
          logical[0], logical[1], bits, bytes));
    }
    ref.sources.push_back(codesKey);
    if (e == 0) {
      auto conventions = packingConventions(f);
      if (!conventions) {
        return conventions.takeError();
      }
      ref.packed = *conventions;
      ref.packed->bytes = bytes;
    }
    ref.packed->scaleSources.push_back(scaleKey);
    for (const std::string &k : {codesKey, scaleKey, shapeKey}) {
      boundKeys.insert(k);
    }
  }
  if (def.contains("stack")) {
    ref.shape.push_back(count);
  }
  ref.shape.insert(ref.shape.end(), logical.begin(), logical.end());
  return std::optional<WeightRef>(std::move(ref));
}

llvm::Error Recognition::selectRows(const json &def, llvm::StringRef defPath,
                                    WeightRef &ref) {
  std::string path = (defPath + ".rows").str();
  const json &rows = def["rows"];
  if (!rows.is_array() || rows.size() != 2) {
    return descError(path, "expected [first row, end row]");
  }
  auto begin = evaluateInt(rows[0], path + "[0]");
  if (!begin) {
    return begin.takeError();
  }
  auto end = evaluateInt(rows[1], path + "[1]");
  if (!end) {
    return end.takeError();
  }
  // Rows of each source: dimension 1 of a stack, else dimension 0.
  size_t dim = def.contains("stack") ? 1 : 0;
  if (ref.shape.size() <= dim || *begin < 0 || *begin >= *end ||
      *end > ref.shape[dim]) {
    return ckptError(llvm::formatv("tensor '{0}' ({1}) of shape {2} has no "
                                   "rows [{3}, {4}) ({5})",
                                   ref.sources.front(), ref.role,
                                   shapeText(ref.shape), *begin, *end, path));
  }
  ref.rows = std::array<int64_t, 2>{*begin, *end};
  ref.shape[dim] = *end - *begin;
  return llvm::Error::success();
}

llvm::Expected<WeightRef> Recognition::bindRequired(const json &object,
                                                    const char *key,
                                                    int64_t layer,
                                                    llvm::StringRef path) {
  // A list of roles: the first the checkpoint has (e.g. an lm_head, else
  // the tied embedding).
  auto it = object.find(key);
  if (it != object.end() && it->is_array() && !it->empty()) {
    const json *chosen = &it->back();
    for (const json &candidate : *it) {
      if (candidate.is_string() &&
          roleTensor(candidate.get<std::string>(), layer)) {
        chosen = &candidate;
        break;
      }
    }
    if (!chosen->is_string()) {
      return descError((path + "." + key).str(), "expected role names");
    }
    if (chosen != &it->front()) {
      notes.push_back(llvm::formatv("{0}.{1}: no '{2}' tensor, using '{3}'",
                                    path, key, it->front().get<std::string>(),
                                    chosen->get<std::string>()));
    }
    auto ref = bindRole(chosen->get<std::string>(), layer, /*required=*/true,
                        (path + "." + key).str());
    if (!ref) {
      return ref.takeError();
    }
    return std::move(**ref);
  }
  auto role = string(object, key, path);
  if (!role) {
    return role.takeError();
  }
  auto ref =
      bindRole(*role, layer, /*required=*/true, (path + "." + key).str());
  if (!ref) {
    return ref.takeError();
  }
  return std::move(**ref);
}

llvm::Expected<std::optional<WeightRef>>
Recognition::bindOptional(const json &object, const char *key, int64_t layer,
                          llvm::StringRef path) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    return std::nullopt;
  }
  if (!it->is_string()) {
    return descError((path + "." + key).str(), "expected a role name");
  }
  return bindRole(it->get<std::string>(), layer, /*required=*/true,
                  (path + "." + key).str());
}

//===----------------------------------------------------------------------===//
// Architecture fields
//===----------------------------------------------------------------------===//

llvm::Expected<const json *> Recognition::object(const json &parent,
                                                 const char *key,
                                                 llvm::StringRef path,
                                                 bool required) {
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) {
    if (required) {
      return descError((path + "." + key).str(), "missing");
    }
    return nullptr;
  }
  if (!it->is_object()) {
    return descError((path + "." + key).str(), "expected an object");
  }
  return &*it;
}

llvm::Expected<std::string>
Recognition::string(const json &parent, const char *key, llvm::StringRef path) {
  auto it = parent.find(key);
  if (it == parent.end() || !it->is_string()) {
    return descError((path + "." + key).str(), "expected a string");
  }
  return it->get<std::string>();
}

template <typename EnumT>
llvm::Expected<EnumT>
Recognition::enumField(const json &parent, const char *key,
                       llvm::StringRef path,
                       llvm::ArrayRef<std::pair<const char *, EnumT>> choices,
                       std::optional<EnumT> fallback) {
  auto it = parent.find(key);
  std::vector<std::string> names;
  for (auto &[name, value] : choices) {
    names.push_back(std::string("'") + name + "'");
  }
  if (it == parent.end() && fallback) {
    return *fallback;
  }
  if (it == parent.end() || !it->is_string()) {
    return descError((path + "." + key).str(),
                     "expected one of " + llvm::join(names, ", "));
  }
  for (auto &[name, value] : choices) {
    if (*it == name) {
      return value;
    }
  }
  return descError((path + "." + key).str(), "expected one of " +
                                                 llvm::join(names, ", ") +
                                                 ", got " + it->dump());
}

llvm::Expected<double> Recognition::number(const json &parent, const char *key,
                                           llvm::StringRef path,
                                           std::optional<double> fallback) {
  auto it = parent.find(key);
  if (it == parent.end()) {
    if (fallback) {
      return *fallback;
    }
    return descError((path + "." + key).str(), "missing");
  }
  return evaluate(*it, (path + "." + key).str());
}

constexpr std::pair<const char *, NormKind> kNormKinds[] = {
    {"rms", NormKind::Rms}, {"layer", NormKind::Layer}};
constexpr std::pair<const char *, Activation> kActivations[] = {
    {"silu", Activation::Silu},
    {"gelu", Activation::Gelu},
    {"gelu_tanh", Activation::GeluTanh},
    {"relu", Activation::Relu}};

llvm::Expected<NormDesc> Recognition::norm(const json &object, int64_t layer,
                                           llvm::StringRef path) {
  NormDesc desc;
  auto kind = enumField<NormKind>(object, "kind", path, kNormKinds);
  auto eps = number(object, "eps", path);
  if (!kind) {
    return kind.takeError();
  }
  if (!eps) {
    return eps.takeError();
  }
  desc.kind = *kind;
  desc.eps = *eps;
  auto weight = bindOptional(object, "weight", layer, path);
  if (!weight) {
    return weight.takeError();
  }
  desc.weight = std::move(*weight);
  auto bias = bindOptional(object, "bias", layer, path);
  if (!bias) {
    return bias.takeError();
  }
  desc.bias = std::move(*bias);
  return desc;
}

llvm::Expected<AttentionDesc> Recognition::attention(const json &object,
                                                     int64_t layer,
                                                     llvm::StringRef path) {
  AttentionDesc desc;
  auto normObject = this->object(object, "norm", path, /*required=*/true);
  if (!normObject) {
    return normObject.takeError();
  }
  auto normDesc = norm(**normObject, layer, (path + ".norm").str());
  if (!normDesc) {
    return normDesc.takeError();
  }
  desc.norm = std::move(*normDesc);
  auto conv = bindOptional(object, "conv", layer, path);
  if (!conv) {
    return conv.takeError();
  }
  if (*conv && ((*conv)->shape.size() != 3 || (*conv)->shape[1] != 1 ||
                (*conv)->shape[2] < 2)) {
    return ckptError(llvm::formatv(
        "tensor '{0}' ({1}) has shape {2}; a depthwise causal convolution "
        "is [channels, 1, width] with width >= 2",
        (*conv)->sources.front(), (*conv)->role, shapeText((*conv)->shape)));
  }
  desc.conv = std::move(*conv);
  for (auto [field, target] :
       {std::pair("q", &desc.q), std::pair("k", &desc.k),
        std::pair("v", &desc.v), std::pair("o", &desc.o)}) {
    auto ref = bindRequired(object, field, layer, path);
    if (!ref) {
      return ref.takeError();
    }
    *target = std::move(*ref);
  }
  auto qk = this->object(object, "qk_norm", path, /*required=*/false);
  if (!qk) {
    return qk.takeError();
  }
  if (*qk) {
    std::string qkPath = (path + ".qk_norm").str();
    QkNormDesc qkDesc;
    auto kind = enumField<NormKind>(**qk, "kind", qkPath, kNormKinds);
    auto eps = number(**qk, "eps", qkPath);
    auto placement =
        enumField<bool>(**qk, "placement", qkPath,
                        {{"before_rope", true}, {"after_rope", false}});
    if (!kind) {
      return kind.takeError();
    }
    if (!eps) {
      return eps.takeError();
    }
    if (!placement) {
      return placement.takeError();
    }
    qkDesc.kind = *kind;
    qkDesc.eps = *eps;
    qkDesc.beforeRope = *placement;
    for (auto [field, target] : {std::pair("q_weight", &qkDesc.qWeight),
                                 std::pair("q_gain", &qkDesc.qGain),
                                 std::pair("k_weight", &qkDesc.kWeight),
                                 std::pair("k_gain", &qkDesc.kGain)}) {
      auto ref = bindOptional(**qk, field, layer, qkPath);
      if (!ref) {
        return ref.takeError();
      }
      *target = std::move(*ref);
    }
    desc.qkNorm = std::move(qkDesc);
  }
  auto rope = this->object(object, "rope", path, /*required=*/false);
  if (!rope) {
    return rope.takeError();
  }
  if (*rope) {
    std::string ropePath = (path + ".rope").str();
    RopeDesc ropeDesc;
    auto layout =
        enumField<RopeLayout>(**rope, "layout", ropePath,
                              {{"half_split", RopeLayout::HalfSplit},
                               {"interleaved", RopeLayout::Interleaved}});
    auto theta = number(**rope, "theta", ropePath);
    if (!layout) {
      return layout.takeError();
    }
    if (!theta) {
      return theta.takeError();
    }
    // Without `dims`, RoPE rotates whole heads.
    auto dims = evaluateInt((*rope)->contains("dims") ? (**rope)["dims"]
                                                      : json("head_dim"),
                            ropePath + ".dims");
    if (!dims) {
      return dims.takeError();
    }
    ropeDesc.layout = *layout;
    ropeDesc.theta = *theta;
    ropeDesc.dims = *dims;
    desc.rope = ropeDesc;
  }
  auto vScale = bindOptional(object, "v_scale", layer, path);
  if (!vScale) {
    return vScale.takeError();
  }
  desc.vScale = std::move(*vScale);
  auto scale = number(object, "scale", path);
  if (!scale) {
    return scale.takeError();
  }
  desc.scale = *scale;
  return desc;
}

llvm::Expected<FfnDesc> Recognition::ffn(const json &object, int64_t layer,
                                         llvm::StringRef path) {
  FfnDesc desc;
  auto gate = bindOptional(object, "gate", layer, path);
  auto up = bindRequired(object, "up", layer, path);
  auto down = bindRequired(object, "down", layer, path);
  auto activation =
      enumField<Activation>(object, "activation", path, kActivations);
  if (!gate) {
    return gate.takeError();
  }
  if (!up) {
    return up.takeError();
  }
  if (!down) {
    return down.takeError();
  }
  if (!activation) {
    return activation.takeError();
  }
  desc.gate = std::move(*gate);
  desc.up = std::move(*up);
  desc.down = std::move(*down);
  desc.activation = *activation;
  return desc;
}

llvm::Expected<MoEDesc> Recognition::moe(const json &object, int64_t layer,
                                         llvm::StringRef path) {
  MoEDesc desc;
  auto router = this->object(object, "router", path, /*required=*/true);
  if (!router) {
    return router.takeError();
  }
  std::string routerPath = (path + ".router").str();
  RouterDesc &r = desc.router;
  auto weight = bindRequired(**router, "weight", layer, routerPath);
  if (!weight) {
    return weight.takeError();
  }
  r.weight = std::move(*weight);
  auto bias = bindOptional(**router, "bias", layer, routerPath);
  if (!bias) {
    return bias.takeError();
  }
  r.bias = std::move(*bias);
  auto scoring =
      enumField<RouterScoring>(**router, "scoring", routerPath,
                               {{"softmax", RouterScoring::Softmax},
                                {"sigmoid", RouterScoring::Sigmoid}});
  auto selection = enumField<SelectionBias>(
      **router, "selection_bias", routerPath,
      {{"logits", SelectionBias::Logits}, {"scores", SelectionBias::Scores}},
      SelectionBias::Logits);
  auto capacity = enumField<CapacityRule>(
      **router, "capacity", routerPath,
      {{"dropless", CapacityRule::Dropless},
       {"drop_lowest_gate", CapacityRule::DropLowestGate}},
      CapacityRule::Dropless);
  auto topK = (*router)->contains("top_k")
                  ? evaluateInt((**router)["top_k"], routerPath + ".top_k")
                  : llvm::Expected<int64_t>(
                        descError(routerPath + ".top_k", "missing"));
  auto renormEps = number(**router, "renorm_eps", routerPath, 0.0);
  auto scaling = number(**router, "scaling", routerPath, 1.0);
  auto factor = number(**router, "capacity_factor", routerPath, 0.0);
  if (!scoring) {
    return scoring.takeError();
  }
  if (!selection) {
    return selection.takeError();
  }
  if (!capacity) {
    return capacity.takeError();
  }
  if (!topK) {
    return topK.takeError();
  }
  if (!renormEps) {
    return renormEps.takeError();
  }
  if (!scaling) {
    return scaling.takeError();
  }
  if (!factor) {
    return factor.takeError();
  }
  r.scoring = *scoring;
  r.selectionBias = *selection;
  r.capacity = *capacity;
  r.topK = *topK;
  r.renormEps = *renormEps;
  r.scaling = *scaling;
  r.capacityFactor = *factor;
  auto renormalize = (*router)->find("renormalize");
  if (renormalize == (*router)->end() || !renormalize->is_boolean()) {
    return descError(routerPath + ".renormalize", "expected true or false");
  }
  r.renormalize = renormalize->get<bool>();
  int64_t experts = r.weight.shape[0];
  if (r.topK < 1 || r.topK > experts) {
    return ckptError(llvm::formatv("layer {0}: top_k = {1} must be in [1, {2}] "
                                   "for a router over {2} experts",
                                   layer, r.topK, experts));
  }

  auto experts_ = this->object(object, "experts", path, /*required=*/true);
  if (!experts_) {
    return experts_.takeError();
  }
  auto expertFfn = ffn(**experts_, layer, (path + ".experts").str());
  if (!expertFfn) {
    return expertFfn.takeError();
  }
  desc.experts = std::move(*expertFfn);
  if (desc.experts.up.shape.size() != 3 ||
      desc.experts.up.shape[0] != experts) {
    return ckptError(llvm::formatv(
        "layer {0}: the routed experts ({1}) must stack {2} experts as "
        "[E, F, D], got {3}",
        layer, desc.experts.up.role, experts,
        shapeText(desc.experts.up.shape)));
  }

  auto shared = this->object(object, "shared", path, /*required=*/false);
  if (!shared) {
    return shared.takeError();
  }
  if (*shared) {
    auto sharedFfn = ffn(**shared, layer, (path + ".shared").str());
    if (!sharedFfn) {
      return sharedFfn.takeError();
    }
    desc.shared = std::move(*sharedFfn);
  }
  return desc;
}

llvm::Expected<LayerDesc> Recognition::layer(int64_t index) {
  const json &arch = root["architecture"];
  LayerDesc desc;
  auto attn = object(arch, "attention", "architecture", /*required=*/true);
  if (!attn) {
    return attn.takeError();
  }
  auto attnDesc = attention(**attn, index, "architecture.attention");
  if (!attnDesc) {
    return attnDesc.takeError();
  }
  desc.attention = std::move(*attnDesc);

  auto ffnObject = object(arch, "ffn", "architecture", /*required=*/true);
  if (!ffnObject) {
    return ffnObject.takeError();
  }
  const json &f = **ffnObject;
  auto normObject = object(f, "norm", "architecture.ffn", /*required=*/true);
  if (!normObject) {
    return normObject.takeError();
  }
  auto ffnNorm = norm(**normObject, index, "architecture.ffn.norm");
  if (!ffnNorm) {
    return ffnNorm.takeError();
  }
  desc.ffnNorm = std::move(*ffnNorm);

  // A layer is MoE when its `moe_when_present` role exists (physics: the
  // router; its layer 0 is dense), or always when the key is absent and
  // the description has a `moe` section.
  bool isMoE = f.contains("moe");
  if (isMoE && f.contains("moe_when_present")) {
    auto role = string(f, "moe_when_present", "architecture.ffn");
    if (!role) {
      return role.takeError();
    }
    isMoE = roleTensor(*role, index) != nullptr;
  }
  if (isMoE) {
    auto moeObject = object(f, "moe", "architecture.ffn", /*required=*/true);
    if (!moeObject) {
      return moeObject.takeError();
    }
    auto moeDesc = moe(**moeObject, index, "architecture.ffn.moe");
    if (!moeDesc) {
      return moeDesc.takeError();
    }
    desc.moe = std::move(*moeDesc);
  } else {
    auto denseObject =
        object(f, "dense", "architecture.ffn", /*required=*/false);
    if (!denseObject) {
      return denseObject.takeError();
    }
    if (!*denseObject) {
      return ckptError(llvm::formatv(
          "layer {0} has no MoE tensors and the family has no dense FFN",
          index));
    }
    auto dense = ffn(**denseObject, index, "architecture.ffn.dense");
    if (!dense) {
      return dense.takeError();
    }
    desc.dense = std::move(*dense);
  }
  return desc;
}

//===----------------------------------------------------------------------===//
// The whole model
//===----------------------------------------------------------------------===//

llvm::Expected<ModelDescription> Recognition::run() {
  if (auto err = mapNames()) {
    return std::move(err);
  }
  if (auto err = countLayers()) {
    return std::move(err);
  }
  if (numLayers == 0) {
    return ckptError("no layers: no tensor matches '" +
                     instantiate(root.value("layer_count_from", ""), 0) +
                     "' of family " + family.name);
  }
  if (auto err = decideConfigTrust()) {
    return std::move(err);
  }

  ModelDescription model;
  model.family = family.name;
  model.descriptionSource = family.source;
  model.checkpointPath = tensors.path();
  for (auto [name, target] :
       {std::pair("vocab", &model.vocab), std::pair("d_model", &model.dModel),
        std::pair("n_heads", &model.nHeads),
        std::pair("n_kv_heads", &model.nKvHeads),
        std::pair("head_dim", &model.headDim)}) {
    auto value = lookup(name);
    if (!value) {
      // An error inside the dim's expression already names the description
      // and the dim; others (an unknown name) get both here.
      std::string message = llvm::toString(value.takeError());
      if (llvm::StringRef(message).starts_with(family.source + ": ")) {
        return error(message);
      }
      return descError(std::string("dims.") + name, message);
    }
    // Checked before the conversion, which is undefined for NaN and for
    // values past int64_t (found by test/fuzz/fuzz_family).
    if (!(*value >= 1 && *value <= kLargestSize)) {
      return ckptError(llvm::formatv("{0} = {1}: must be a positive size", name,
                                     numberText(*value)));
    }
    *target = static_cast<int64_t>(*value);
  }
  if (model.nHeads % model.nKvHeads != 0) {
    return ckptError(llvm::formatv("{0} query heads are not a multiple of "
                                   "{1} KV heads",
                                   model.nHeads, model.nKvHeads));
  }
  auto context = lookup("context");
  if (!context) {
    return descError("dims.context", llvm::toString(context.takeError()));
  }
  if (!(*context >= 1 && *context <= kLargestSize)) {
    return ckptError("context = " + numberText(*context) +
                     ": must be a positive size");
  }
  model.contextLength = static_cast<int64_t>(*context);

  const json &arch = root["architecture"];
  auto embedding = object(arch, "embedding", "architecture", true);
  if (!embedding) {
    return embedding.takeError();
  }
  auto table = bindRequired(**embedding, "table", 0, "architecture.embedding");
  if (!table) {
    return table.takeError();
  }
  model.embedding = std::move(*table);
  auto embScale = number(**embedding, "scale", "architecture.embedding", 1.0);
  if (!embScale) {
    return embScale.takeError();
  }
  model.embeddingScale = *embScale;

  for (int64_t i = 0; i < numLayers; ++i) {
    auto layerDesc = layer(layerIds[i]);
    if (!layerDesc) {
      return layerDesc.takeError();
    }
    if (layerDesc->attention.rope &&
        (layerDesc->attention.rope->dims <= 0 ||
         layerDesc->attention.rope->dims % 2 != 0 ||
         layerDesc->attention.rope->dims > model.headDim)) {
      return ckptError(llvm::formatv("rotary dims = {0} must be even and in "
                                     "(0, head_dim = {1}]",
                                     layerDesc->attention.rope->dims,
                                     model.headDim));
    }
    model.layers.push_back(std::move(*layerDesc));
  }

  auto finalNorm = object(arch, "final_norm", "architecture", true);
  if (!finalNorm) {
    return finalNorm.takeError();
  }
  auto finalDesc = norm(**finalNorm, 0, "architecture.final_norm");
  if (!finalDesc) {
    return finalDesc.takeError();
  }
  model.finalNorm = std::move(*finalDesc);

  auto logits = object(arch, "logits", "architecture", true);
  if (!logits) {
    return logits.takeError();
  }
  auto head = bindRequired(**logits, "weight", 0, "architecture.logits");
  if (!head) {
    return head.takeError();
  }
  model.logitsWeight = std::move(*head);
  auto headBias = bindOptional(**logits, "bias", 0, "architecture.logits");
  if (!headBias) {
    return headBias.takeError();
  }
  model.logitsBias = std::move(*headBias);
  auto logitScale = number(**logits, "scale", "architecture.logits", 1.0);
  if (!logitScale) {
    return logitScale.takeError();
  }
  model.logitScale = *logitScale;

  // Tensors no role used: a model that silently drops weights computes
  // something else, so say which.
  std::vector<std::string> unused;
  const json &ignore = arrayOrEmpty(root, "ignore");
  for (const TensorInfo &tensor : tensors.tensors()) {
    if (boundKeys.count(tensor.name)) {
      continue;
    }
    bool ignored = false;
    for (const json &pattern : ignore) {
      ignored |= pattern.is_string() &&
                 globMatch(pattern.get<std::string>(),
                           stripPrefixes(tensor.name,
                                         arrayOrEmpty(root, "strip_prefixes")));
    }
    if (!ignored) {
      unused.push_back(tensor.name);
    }
  }
  if (!unused.empty()) {
    std::vector<std::string> shown(
        unused.begin(), unused.begin() + std::min<size_t>(unused.size(), 8));
    notes.push_back(llvm::formatv(
        "warning: {0} checkpoint tensor(s) are not used by family {1}: {2}{3}",
        unused.size(), family.name, llvm::join(shown, ", "),
        unused.size() > shown.size() ? ", ..." : ""));
  }

  // Parameter counts, as the cards count them: every distinct tensor once;
  // active = all but the routed experts a token does not visit.
  std::set<std::string> counted;
  auto count = [&](const WeightRef &ref, double activeFraction) {
    // A tensor counts once however many roles read it (tied weights); row
    // ranges of a fused tensor (Q, K, V of one QKV) count separately.
    std::string rows =
        ref.rows
            ? llvm::formatv("[{0}, {1})", (*ref.rows)[0], (*ref.rows)[1]).str()
            : "";
    for (const std::string &source : ref.sources) {
      if (!counted.insert(source + rows).second) {
        return;
      }
    }
    model.totalParams += ref.numElements();
    model.activeParams +=
        static_cast<int64_t>(std::llround(ref.numElements() * activeFraction));
  };
  forEachWeight(model, count);

  model.values = values;
  model.values["n_layers"] = static_cast<double>(numLayers);
  model.notes = std::move(notes);
  return model;
}

} // namespace

//===----------------------------------------------------------------------===//
// Public API
//===----------------------------------------------------------------------===//

llvm::Expected<FamilyDescription>
parseFamilyDescription(llvm::StringRef text, llvm::StringRef source) {
  FamilyDescription family;
  family.source = source.str();
  try {
    family.root = json::parse(text.begin(), text.end());
  } catch (const json::exception &e) {
    return error(source + ": not valid JSON: " + e.what());
  }
  const json &root = family.root;
  if (!root.is_object()) {
    return error(source + ": expected a JSON object");
  }
  auto need = [&](const char *key, json::value_t type,
                  const char *what) -> llvm::Error {
    auto it = root.find(key);
    if (it == root.end() || it->type() != type) {
      return error(source + ": '" + key + "' must be " + what);
    }
    return llvm::Error::success();
  };
  for (auto [key, type, what] :
       {std::tuple("family", json::value_t::string, "a string"),
        std::tuple("match", json::value_t::array, "an array of tensor names"),
        std::tuple("layer_count_from", json::value_t::string,
                   "a tensor name with {i}"),
        std::tuple("dims", json::value_t::object, "an object of expressions"),
        std::tuple("settings", json::value_t::object, "an object"),
        std::tuple("layer_tensors", json::value_t::object, "an object"),
        std::tuple("architecture", json::value_t::object, "an object")}) {
    if (auto err = need(key, type, what)) {
      return std::move(err);
    }
  }
  family.name = root["family"].get<std::string>();
  return family;
}

llvm::Expected<FamilyDescription> loadFamilyDescription(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer) {
    return error(path + ": " + buffer.getError().message());
  }
  return parseFamilyDescription((*buffer)->getBuffer(), path);
}

std::vector<std::string> missingMatchTensors(const FamilyDescription &family,
                                             const TensorSource &tensors) {
  const json &prefixes = arrayOrEmpty(family.root, "strip_prefixes");
  std::set<std::string> names;
  for (const TensorInfo &tensor : tensors.tensors()) {
    names.insert(stripPrefixes(tensor.name, prefixes));
  }
  std::vector<std::string> missing;
  for (const json &name : arrayOrEmpty(family.root, "match")) {
    if (name.is_string() && !names.count(name.get<std::string>())) {
      missing.push_back(name.get<std::string>());
    }
  }
  return missing;
}

llvm::Expected<ModelDescription> recognizeModel(const FamilyDescription &family,
                                                const TensorSource &tensors,
                                                const json *config,
                                                llvm::StringRef configPath) {
  try {
    return Recognition(family, tensors, config, configPath).run();
  } catch (const json::exception &e) {
    return error(family.source + ": malformed description: " + e.what());
  }
}

} // namespace moe::frontend
