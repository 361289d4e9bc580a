//===- TargetDescription.cpp - What moec knows of a target ----------------===//

#include "targets/common/TargetDescription.h"

#include "llvm/ADT/StringExtras.h"

namespace mlir::moe {

namespace {

/// Reads the fields of one JSON object of a description; the first field
/// missing, malformed or unknown is the error, named with the object's
/// path ("toolchain.cc").
class FieldReader {
public:
  FieldReader(const llvm::json::Object &object, llvm::StringRef source,
              llvm::StringRef prefix, llvm::Error &error)
      : object(object), source(source), prefix(prefix), error(error) {}

  void string(llvm::StringRef field, std::string &out, bool required) {
    const llvm::json::Value *value = find(field, required);
    if (!value) {
      return;
    }
    std::optional<llvm::StringRef> text = value->getAsString();
    if (!text) {
      fail(field, "expected a string");
    } else if (required && text->empty()) {
      fail(field, "must not be empty");
    } else {
      out = text->str();
    }
  }

  void strings(llvm::StringRef field, std::vector<std::string> &out) {
    const llvm::json::Value *value = find(field, /*required=*/false);
    if (!value) {
      return;
    }
    const llvm::json::Array *array = value->getAsArray();
    out.clear();
    for (size_t i = 0; array && i < array->size(); ++i) {
      std::optional<llvm::StringRef> text = (*array)[i].getAsString();
      if (!text) {
        array = nullptr;
        break;
      }
      out.push_back(text->str());
    }
    if (!array) {
      fail(field, "expected an array of strings");
    }
  }

  void integer(llvm::StringRef field, int &out, int min, int max,
               bool required = true) {
    const llvm::json::Value *value = find(field, required);
    if (!value) {
      return;
    }
    std::optional<int64_t> number = value->getAsInteger();
    if (!number || *number < min || *number > max) {
      fail(field, "expected a whole number in [" + llvm::Twine(min) + ", " +
                      llvm::Twine(max) + "]");
      return;
    }
    out = static_cast<int>(*number);
  }

  /// The object at `field`; nullptr (and, if required, the error) if none.
  const llvm::json::Object *nested(llvm::StringRef field, bool required) {
    const llvm::json::Value *value = find(field, required);
    if (!value) {
      return nullptr;
    }
    const llvm::json::Object *result = value->getAsObject();
    if (!result) {
      fail(field, "expected an object");
    }
    return result;
  }

  /// A misspelt optional field would be ignored silently: every key must be
  /// one of `known`.
  void onlyKeys(llvm::ArrayRef<llvm::StringRef> known) {
    for (const auto &entry : object) {
      if (!llvm::is_contained(known, llvm::StringRef(entry.first))) {
        fail(entry.first,
             "unknown field (expected one of " + llvm::join(known, ", ") + ")");
        return;
      }
    }
  }

  void fail(llvm::StringRef field, const llvm::Twine &what) {
    if (!error) {
      error = llvm::createStringError(source + ": '" + prefix + field +
                                      "': " + what);
    }
  }

private:
  const llvm::json::Value *find(llvm::StringRef field, bool required) {
    if (error) {
      return nullptr;
    }
    const llvm::json::Value *value = object.get(field);
    if (!value && required) {
      fail(field, "missing");
    }
    return value;
  }

  const llvm::json::Object &object;
  llvm::StringRef source;
  llvm::StringRef prefix;
  llvm::Error &error;
};

} // namespace

llvm::Expected<TargetDescription>
parseTargetDescription(const llvm::json::Value &value, llvm::StringRef source) {
  const llvm::json::Object *object = value.getAsObject();
  if (!object) {
    return llvm::createStringError(source + ": expected a JSON object");
  }
  TargetDescription target;
  target.source = source.str();
  llvm::Error error = llvm::Error::success();
  FieldReader top(*object, source, "", error);
  // `source`, `runs_natively` and `ptxas` are what `moec targets --json`
  // adds about this moec and this machine; they are ignored.
  top.onlyKeys({"name", "summary", "backend", "triple", "halide_target",
                "vector_bytes", "vector_registers", "int8_dot", "gpu",
                "toolchain", "emulator", "runtime_dir", "source",
                "runs_natively", "ptxas"});
  top.string("name", target.name, true);
  top.string("summary", target.summary, false);
  top.string("backend", target.backend, false);
  top.string("triple", target.triple, true);
  top.string("halide_target", target.halideTarget, true);
  top.integer("vector_bytes", target.vectorBytes, 4, 256);
  top.integer("vector_registers", target.vectorRegisters, 4, 256);
  top.string("runtime_dir", target.runtimeDir, false);
  if (const llvm::json::Object *toolchain = top.nested("toolchain", true)) {
    FieldReader fields(*toolchain, source, "toolchain.", error);
    fields.onlyKeys(
        {"cc", "package", "native_package", "sysroot", "cflags", "ldflags"});
    fields.string("cc", target.cc, true);
    fields.string("package", target.ccPackage, true);
    fields.string("native_package", target.ccNativePackage, false);
    fields.string("sysroot", target.sysroot, false);
    fields.strings("cflags", target.cflags);
    fields.strings("ldflags", target.ldflags);
  }
  if (const llvm::json::Object *dot = top.nested("int8_dot", false)) {
    FieldReader fields(*dot, source, "int8_dot.", error);
    fields.onlyKeys({"bytes", "codes", "halide_features"});
    fields.integer("bytes", target.int8Dot.dotBytes, 2, 4, false);
    std::string codes = "signed";
    fields.string("codes", codes, false);
    fields.string("halide_features", target.int8Dot.halideFeatures, false);
    if (target.int8Dot.dotBytes == 3) {
      fields.fail("bytes", "expected 2 or 4");
    }
    if (codes != "signed" && codes != "unsigned") {
      fields.fail("codes", "expected \"signed\" or \"unsigned\"");
    }
    target.int8Dot.unsignedCodes = codes == "unsigned";
  }
  if (const llvm::json::Object *emulator = top.nested("emulator", false)) {
    FieldReader fields(*emulator, source, "emulator.", error);
    fields.onlyKeys({"command", "package"});
    fields.strings("command", target.emulator);
    fields.string("package", target.emulatorPackage, false);
  }
  if (const llvm::json::Object *gpu = top.nested("gpu", false)) {
    FieldReader fields(*gpu, source, "gpu.", error);
    fields.onlyKeys({"block_threads", "ptxas_archs"});
    fields.integer("block_threads", target.gpu.blockThreads, 32, 1024, false);
    fields.strings("ptxas_archs", target.gpu.ptxasArchs);
    if (target.gpu.blockThreads % 32 != 0) {
      fields.fail("block_threads", "expected a multiple of 32 (a warp)");
    }
  }
  if (target.backend != "cpu" && target.backend != "cuda") {
    top.fail("backend", "'" + target.backend +
                            "' is not a backend of this moec (expected 'cpu' "
                            "or 'cuda')");
  }
  if (target.vectorBytes % 4 != 0) {
    top.fail("vector_bytes", "expected a multiple of 4");
  }
  if (error) {
    return std::move(error);
  }
  return target;
}

llvm::json::Value TargetDescription::toJson() const {
  auto strings = [](const std::vector<std::string> &list) {
    llvm::json::Array array;
    for (const std::string &s : list) {
      array.push_back(s);
    }
    return array;
  };
  return llvm::json::Object{
      {"name", name},
      {"summary", summary},
      {"backend", backend},
      {"triple", triple},
      {"halide_target", halideTarget},
      {"vector_bytes", vectorBytes},
      {"vector_registers", vectorRegisters},
      {"int8_dot",
       llvm::json::Object{
           {"bytes", int8Dot.dotBytes},
           {"codes", int8Dot.unsignedCodes ? "unsigned" : "signed"},
           {"halide_features", int8Dot.halideFeatures}}},
      {"gpu", llvm::json::Object{{"block_threads", gpu.blockThreads},
                                 {"ptxas_archs", strings(gpu.ptxasArchs)}}},
      {"runtime_dir", runtimeDir},
      {"toolchain", llvm::json::Object{{"cc", cc},
                                       {"package", ccPackage},
                                       {"native_package", ccNativePackage},
                                       {"sysroot", sysroot},
                                       {"cflags", strings(cflags)},
                                       {"ldflags", strings(ldflags)}}},
      {"emulator", llvm::json::Object{{"command", strings(emulator)},
                                      {"package", emulatorPackage}}},
      {"source", source}};
}

} // namespace mlir::moe
