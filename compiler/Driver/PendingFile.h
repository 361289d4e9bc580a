//===- PendingFile.h - Outputs that appear whole or not at all --*- C++ -*-===//
//
// Every file moec writes goes through a temporary name beside it and is
// renamed into place once complete, so a failed compile never leaves a
// half-written output. The temporary file is also removed when moec is
// interrupted (SIGINT, SIGTERM, SIGHUP: LLVM's signal handlers, installed
// by InitLLVM), so Ctrl-C leaves nothing behind either.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_DRIVER_PENDINGFILE_H
#define MOE_COMPILER_DRIVER_PENDINGFILE_H

#include "mlir/Support/LogicalResult.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Signals.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <unistd.h>

namespace mlir::moe {

/// A file written under a temporary name and renamed when committed;
/// removed if never committed. A path that is not a regular file (-o
/// /dev/null, a FIFO) is written in place: renaming over it would replace
/// the device with a file.
class PendingFile {
public:
  explicit PendingFile(std::string path) : final(std::move(path)) {
    inPlace = writtenInPlace(final);
    if (inPlace) {
      temp = final;
      return;
    }
    temp = final + ".tmp" + std::to_string(::getpid());
    llvm::sys::RemoveFileOnSignal(temp);
  }
  /// Whether `path` exists and is not a regular file (a device, a FIFO):
  /// such a path is written in place, never renamed over.
  static bool writtenInPlace(const std::string &path) {
    llvm::sys::fs::file_status status;
    return !llvm::sys::fs::status(path, status) &&
           llvm::sys::fs::exists(status) &&
           status.type() != llvm::sys::fs::file_type::regular_file;
  }
  PendingFile(const PendingFile &) = delete;
  PendingFile &operator=(const PendingFile &) = delete;
  ~PendingFile() {
    if (inPlace) {
      return;
    }
    if (!committed) {
      llvm::sys::fs::remove(temp);
    }
    llvm::sys::DontRemoveFileOnSignal(temp);
  }
  const std::string &tempPath() const { return temp; }
  /// Writes the temporary file through `write`; an error names the final
  /// path.
  llvm::Error write(llvm::function_ref<void(llvm::raw_ostream &)> write) const {
    std::error_code ec;
    llvm::raw_fd_ostream os(temp, ec);
    if (!ec) {
      write(os);
      os.close();
      ec = os.error();
      os.clear_error();
    }
    if (ec) {
      return llvm::createStringError("cannot write " + final + ": " +
                                     ec.message());
    }
    return llvm::Error::success();
  }
  LogicalResult commit() {
    if (inPlace) {
      return success();
    }
    if (std::error_code ec = llvm::sys::fs::rename(temp, final)) {
      llvm::errs() << "moec: error: cannot write " << final << ": "
                   << ec.message() << "\n";
      return failure();
    }
    committed = true;
    llvm::sys::DontRemoveFileOnSignal(temp);
    return success();
  }

private:
  std::string final, temp;
  bool inPlace = false;
  bool committed = false;
};

} // namespace mlir::moe

#endif // MOE_COMPILER_DRIVER_PENDINGFILE_H
