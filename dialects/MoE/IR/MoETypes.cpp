//===- MoETypes.cpp - Types of the moe dialect ----------------------------===//
//
// Verifiers of the session-state types: every size must be positive, and
// the element type a float, because the kernels that read the state index it
// with these sizes.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/IR/MoEDialect.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;

#define GET_TYPEDEF_CLASSES
#include "dialects/MoE/IR/MoETypes.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoE/IR/MoEAttrs.cpp.inc"

#include "dialects/MoE/IR/MoEEnums.cpp.inc"

static LogicalResult verifyStateSizes(
    function_ref<InFlightDiagnostic()> emitError, StringRef typeName,
    ArrayRef<std::pair<StringRef, int64_t>> sizes, Type elementType) {
  for (auto [name, value] : sizes) {
    if (value <= 0) {
      return emitError() << typeName << " expects " << name
                         << " to be positive, got " << value;
    }
  }
  if (!isa<FloatType>(elementType)) {
    return emitError() << typeName << " expects a float element type, got "
                       << elementType;
  }
  return success();
}

LogicalResult KVCacheType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t layers, int64_t kvHeads,
                                  int64_t headDim, Type elementType) {
  return verifyStateSizes(
      emitError, "!moe.kv_cache",
      {{"layers", layers}, {"kv_heads", kvHeads}, {"head_dim", headDim}},
      elementType);
}

LogicalResult
ConvStateType::verify(function_ref<InFlightDiagnostic()> emitError,
                      int64_t layers, int64_t channels, int64_t width,
                      Type elementType) {
  return verifyStateSizes(
      emitError, "!moe.conv_state",
      {{"layers", layers}, {"channels", channels}, {"width", width}},
      elementType);
}

void MoEDialect::registerTypesAndAttributes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/MoE/IR/MoETypes.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/MoE/IR/MoEAttrs.cpp.inc"
      >();
}
