//===- ModelLibrary.cpp - A compiled model as a static library ------------===//

#include "compiler/Driver/ModelLibrary.h"

#include "compiler/Driver/PendingFile.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Object/Archive.h"
#include "llvm/Object/ArchiveWriter.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <deque>

namespace mlir::moe {

namespace {

/// The runtime headers NAME.h needs: moert/llm.h and what it includes.
constexpr const char *kApiHeaders[] = {"llm.h", "sampler.h", "status.h"};

std::string headerText(llvm::StringRef name, llvm::StringRef prefix,
                       const TargetDescription &target,
                       const ModelLibraryInfo &info) {
  std::string guard = "MOEC_MODEL_" + llvm::StringRef(prefix).upper() + "_H";
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv(
      "/* {0}.h - {1}, compiled by moec {2} for --target={3}.\n"
      " *\n"
      " * The model is in lib{0}.a (its kernels, its host code and the moec\n"
      " * runtime), its weights in {0}.weights. Build an application with\n"
      " *   {4}\n"
      " * and see moert/llm.h for the calls: tokenize, feed, sample, free.\n"
      " * One compiled model per program: every model defines moert_model.\n"
      " */\n"
      "#ifndef {5}\n"
      "#define {5}\n"
      "\n"
      "#include \"moert/llm.h\"\n"
      "\n"
      "#ifdef __cplusplus\n"
      "extern \"C\" {{\n"
      "#endif\n"
      "\n"
      "extern const struct moert_model_desc_t moert_model;\n"
      "extern const unsigned char moert_model_text[];\n"
      "extern const uint64_t moert_model_text_size;\n"
      "\n"
      "/* moert_llm_open for this model: options->weights_path names its\n"
      " * weight file ({0}.weights, wherever the application keeps it). */\n"
      "static inline moert_status_t {6}_open(const moert_llm_options "
      "*options,\n"
      "                                      moert_llm **out, char *error,\n"
      "                                      size_t error_size) {{\n"
      "  return moert_llm_open(&moert_model, moert_model_text,\n"
      "                        moert_model_text_size, options, out, error,\n"
      "                        error_size);\n"
      "}\n"
      "\n"
      "#ifdef __cplusplus\n"
      "}\n"
      "#endif\n"
      "\n"
      "#endif /* {5} */\n",
      name, info.family, info.moecVersion, info.target,
      modelLibraryLinkCommand(target, "<this directory>", name), guard, prefix);
  return text;
}

/// The archive: `objects`, then every member of the runtime's libmoert.a
/// (not libmoert_main.a, whose main() is the executable's).
llvm::Error writeArchive(const RuntimeLocation &runtime,
                         const std::vector<std::string> &objects,
                         const std::string &path) {
  std::vector<llvm::NewArchiveMember> members;
  for (const std::string &object : objects) {
    llvm::Expected<llvm::NewArchiveMember> member =
        llvm::NewArchiveMember::getFile(object, /*Deterministic=*/true);
    if (!member) {
      return member.takeError();
    }
    members.push_back(std::move(*member));
  }
  std::string runtimeLib = runtime.libDir + "/libmoert.a";
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(runtimeLib);
  if (!buffer) {
    return llvm::createStringError("cannot read " + runtimeLib + ": " +
                                   buffer.getError().message());
  }
  llvm::Expected<std::unique_ptr<llvm::object::Archive>> archive =
      llvm::object::Archive::create((*buffer)->getMemBufferRef());
  if (!archive) {
    return llvm::createStringError(
        runtimeLib + " is not an archive: " + toString(archive.takeError()));
  }
  llvm::Error childError = llvm::Error::success();
  for (const llvm::object::Archive::Child &child :
       (*archive)->children(childError)) {
    llvm::Expected<llvm::NewArchiveMember> member =
        llvm::NewArchiveMember::getOldMember(child, /*Deterministic=*/true);
    if (!member) {
      return member.takeError();
    }
    members.push_back(std::move(*member));
  }
  if (childError) {
    return childError;
  }
  return llvm::writeArchive(path, members,
                            llvm::SymtabWritingMode::NormalSymtab,
                            llvm::object::Archive::K_GNU,
                            /*Deterministic=*/true, /*Thin=*/false);
}

} // namespace

std::string modelLibraryLinkCommand(const TargetDescription &target,
                                    llvm::StringRef dir, llvm::StringRef name) {
  return (target.cc + " app.c -I" + dir + " " + dir + "/lib" + name + ".a " +
          llvm::join(target.ldflags, " "))
      .str();
}

std::string modelSymbolPrefix(llvm::StringRef stem) {
  std::string prefix;
  for (char c : stem) {
    prefix += llvm::isAlnum(c) || c == '_' ? c : '_';
  }
  if (prefix.empty() || llvm::isDigit(prefix[0])) {
    prefix.insert(prefix.begin(), '_');
  }
  return prefix;
}

llvm::Error writeModelLibrary(const TargetDescription &target,
                              const RuntimeLocation &runtime,
                              const std::vector<std::string> &objects,
                              llvm::StringRef outputPath,
                              const ModelLibraryInfo &info) {
  llvm::StringRef dir = llvm::sys::path::parent_path(outputPath);
  std::string name = llvm::sys::path::filename(outputPath).str();
  auto inDir = [&](llvm::StringRef file) {
    return dir.empty() ? file.str() : (dir + "/" + file).str();
  };
  std::string apiDir = inDir("moert");
  if (std::error_code ec = llvm::sys::fs::create_directories(apiDir)) {
    return llvm::createStringError("cannot create " + apiDir + ": " +
                                   ec.message());
  }
  // Renamed into place together at the end: a failure leaves none.
  std::deque<PendingFile> staged;
  auto stage = [&](const std::string &path) -> const PendingFile & {
    return staged.emplace_back(path);
  };
  auto writeText = [&](const std::string &path, llvm::StringRef text) {
    return stage(path).write([&](llvm::raw_ostream &os) { os << text; });
  };
  if (llvm::Error err = writeArchive(
          runtime, objects, stage(inDir("lib" + name + ".a")).tempPath())) {
    return err;
  }
  if (llvm::Error err =
          writeText(inDir(name + ".h"),
                    headerText(name, modelSymbolPrefix(name), target, info))) {
    return err;
  }
  for (const char *header : kApiHeaders) {
    std::string from = runtime.includeDir + "/moert/" + header;
    llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> contents =
        llvm::MemoryBuffer::getFile(from);
    if (!contents) {
      return llvm::createStringError("cannot read " + from + ": " +
                                     contents.getError().message());
    }
    if (llvm::Error err =
            writeText(apiDir + "/" + header, (*contents)->getBuffer())) {
      return err;
    }
  }
  for (PendingFile &file : staged) {
    if (failed(file.commit())) {
      return llvm::createStringError("the library is incomplete");
    }
  }
  return llvm::Error::success();
}

} // namespace mlir::moe
