//===- KernelAbi.cpp - How a compiled kernel is called --------------------===//

#include "targets/common/KernelAbi.h"

namespace mlir::moe {

StringRef cacheAccess(KernelOp kernel, unsigned index) {
  auto access = kernel.getArgAttrOfType<StringAttr>(index, "moe.cache_access");
  return access ? access.getValue() : StringRef("read");
}

FailureOr<SmallVector<KernelAbiSlot>> kernelAbi(KernelOp kernel) {
  using Kind = KernelAbiSlot::Kind;
  SmallVector<KernelAbiSlot> inputs, outputs;
  for (auto [i, type] : llvm::enumerate(kernel.getArgumentTypes())) {
    unsigned index = static_cast<unsigned>(i);
    if (isa<RankedTensorType>(type)) {
      inputs.push_back({Kind::InputTensor, index});
    } else if (type.isIndex()) {
      inputs.push_back({Kind::Scalar, index});
    } else if (isa<KVCacheType>(type)) {
      if (cacheAccess(kernel, index) == "write") {
        outputs.push_back({Kind::CacheKeysWrite, index});
        outputs.push_back({Kind::CacheValuesWrite, index});
      } else {
        inputs.push_back({Kind::CacheKeysRead, index});
        inputs.push_back({Kind::CacheValuesRead, index});
      }
    } else if (isa<ConvStateType>(type)) {
      if (cacheAccess(kernel, index) == "write") {
        outputs.push_back({Kind::ConvStateWrite, index});
      } else {
        inputs.push_back({Kind::ConvStateRead, index});
      }
    } else {
      return kernel.emitOpError("argument ")
             << index << " has a type no kernel can take: " << type;
    }
  }
  SmallVector<KernelAbiSlot> slots(inputs);
  for (unsigned r = 0; r < kernel.getResultTypes().size(); ++r) {
    if (!isa<RankedTensorType>(kernel.getResultTypes()[r])) {
      return kernel.emitOpError("result ") << r << " is not a tensor";
    }
    slots.push_back({Kind::OutputTensor, r});
  }
  slots.append(outputs.begin(), outputs.end());
  return slots;
}

} // namespace mlir::moe
