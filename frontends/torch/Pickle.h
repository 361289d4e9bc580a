//===- Pickle.h - A restricted unpickler for torch checkpoints --*- C++ -*-===//
//
// torch.save pickles a state dict as dicts, lists, tuples and primitives,
// plus four kinds of object: OrderedDict, tensors (rebuilt by
// torch._utils._rebuild_tensor_v2 from a storage named by a persistent id),
// parameters and torch.Size. This unpickler builds a plain value tree for
// exactly that subset. It never executes anything: a global outside the
// allowed set (see isAllowedGlobal) is refused by name the moment the
// pickle asks for it, and so is every opcode torch.save does not write.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_TORCH_PICKLE_H
#define MOE_FRONTENDS_TORCH_PICKLE_H

#include "frontends/checkpoint/DType.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moe::frontend {

struct StorageType;

/// A node of an unpickled tree. Nodes are owned by the PickleTree that made
/// them and refer to each other by pointer (a pickle may share or even cycle
/// through its memo).
struct PickleValue {
  enum class Kind {
    None,
    Bool,
    Int,
    Float,
    String,
    Bytes,
    Tuple,
    List,
    Dict,
    /// An allowed global not yet applied, e.g. `torch.float32`.
    Global,
    /// A storage named by a persistent id: `text` (its key, the member
    /// name under data/), `storageType` and `numel`.
    Storage,
    /// A tensor view of `storage`: `offset`, `shape` and `stride` in
    /// elements.
    Tensor,
  };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  /// String and Bytes contents; a Global's "module.name"; a Storage's key.
  std::string text;
  /// Tuple and List elements; a Dict's keys and values, interleaved.
  std::vector<const PickleValue *> items;
  const StorageType *storageType = nullptr;
  int64_t numel = 0;
  const PickleValue *storage = nullptr;
  int64_t offset = 0;
  llvm::SmallVector<int64_t, 4> shape, stride;

  bool isTensor() const { return kind == Kind::Tensor; }
  size_t dictSize() const { return items.size() / 2; }
  const PickleValue *dictKey(size_t i) const { return items[2 * i]; }
  const PickleValue *dictValue(size_t i) const { return items[2 * i + 1]; }
};

/// The values of one unpickled stream, and its root.
class PickleTree {
public:
  const PickleValue &root() const { return *rootValue; }
  PickleValue *make(PickleValue::Kind kind) {
    nodes.push_back(std::make_unique<PickleValue>());
    nodes.back()->kind = kind;
    return nodes.back().get();
  }
  void setRoot(const PickleValue *value) { rootValue = value; }

private:
  std::vector<std::unique_ptr<PickleValue>> nodes;
  const PickleValue *rootValue = nullptr;
};

/// True for the globals a torch state dict may name.
bool isAllowedGlobal(llvm::StringRef module, llvm::StringRef name);

/// A torch storage class, e.g. FloatStorage: its element type (none for
/// complex128, which moec has no DType for) and its element size.
struct StorageType {
  llvm::StringLiteral name;
  std::optional<DType> dtype;
  unsigned elementBytes;
};

/// The storage class called `className`, or null.
const StorageType *lookupStorageType(llvm::StringRef className);

/// The dtype of a torch storage class name such as "FloatStorage".
std::optional<DType> storageDType(llvm::StringRef className);

/// Unpickles `bytes` (a data.pkl); errors are prefixed with `name` and give
/// the byte offset of the opcode at fault.
llvm::Expected<std::unique_ptr<PickleTree>>
unpickle(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_TORCH_PICKLE_H
