//===- Pickle.cpp - A restricted unpickler for torch checkpoints ----------===//
//
// A stack machine over the opcodes of pickle protocols 2-5 that torch.save
// emits. Objects are built only by the handful of allowed callables below;
// REDUCE, BUILD and BINPERSID interpret their arguments as data and never
// look anything up by a name the pickle supplies.
//
//===----------------------------------------------------------------------===//

#include "frontends/torch/Pickle.h"

#include "frontends/checkpoint/Errors.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstring>

namespace moe::frontend {

namespace {

using Kind = PickleValue::Kind;

/// Rank limit of a tensor a checkpoint may hold.
constexpr size_t kMaxRank = 16;

// The opcodes torch.save writes (Lib/pickletools.py names them).
enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  PROTO = 0x80,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

/// torch dtypes that may appear as plain values (e.g. in a config dict).
bool isTorchDTypeName(llvm::StringRef name) {
  return llvm::StringSwitch<bool>(name)
      .Cases({"float32", "float", "float64", "double", "float16", "half",
              "bfloat16", "int8", "uint8", "int16", "int32", "int64", "bool",
              "complex64", "complex128", "float8_e4m3fn", "float8_e5m2"},
             true)
      .Default(false);
}

class Unpickler {
public:
  Unpickler(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name)
      : bytes(bytes), name(name), tree(std::make_unique<PickleTree>()) {}

  llvm::Expected<std::unique_ptr<PickleTree>> run();

private:
  llvm::Error fail(const llvm::Twine &what) const {
    return makeError(name + ": data.pkl at byte " + llvm::Twine(opAt) + ": " +
                     what);
  }
  bool take(uint64_t n, const uint8_t *&out) {
    if (at > bytes.size() || bytes.size() - at < n) {
      return false;
    }
    out = bytes.data() + at;
    at += n;
    return true;
  }
  bool readUInt(unsigned width, uint64_t &out) {
    const uint8_t *p;
    if (!take(width, p)) {
      return false;
    }
    out = 0;
    for (unsigned i = 0; i < width; ++i) {
      out |= uint64_t(p[i]) << (8 * i);
    }
    return true;
  }
  llvm::Expected<const PickleValue *> pop() {
    if (stack.size() <= floor()) {
      return fail("pops an empty stack");
    }
    const PickleValue *v = stack.back();
    stack.pop_back();
    return v;
  }
  size_t floor() const { return marks.empty() ? 0 : marks.back(); }
  /// Pops everything down to the last mark, and the mark.
  llvm::Expected<std::vector<const PickleValue *>> popToMark() {
    if (marks.empty()) {
      return fail("has no mark to pop to");
    }
    size_t mark = marks.back();
    marks.pop_back();
    std::vector<const PickleValue *> items(stack.begin() + mark, stack.end());
    stack.resize(mark);
    return items;
  }
  PickleValue *make(Kind kind) { return tree->make(kind); }
  /// The top of the stack as a mutable container of `kind`.
  llvm::Expected<PickleValue *> container(Kind kind, size_t depth = 0) {
    if (stack.size() <= floor() + depth) {
      return fail("expects a container on the stack");
    }
    const PickleValue *v = stack[stack.size() - 1 - depth];
    if (v->kind != kind) {
      return fail(kind == Kind::List ? "appends to something not a list"
                                     : "sets an item of something not a "
                                       "dict");
    }
    // Nodes are created mutable by this unpickler; the tree hands them out
    // const.
    return const_cast<PickleValue *>(v);
  }
  llvm::Error pushString(Kind kind, uint64_t length);
  llvm::Error global(llvm::StringRef module, llvm::StringRef className);
  llvm::Error reduce();
  llvm::Error build();
  llvm::Error persistentId();
  llvm::Error step(uint8_t op);

  llvm::ArrayRef<uint8_t> bytes;
  llvm::StringRef name;
  std::unique_ptr<PickleTree> tree;
  uint64_t at = 0, opAt = 0;
  std::vector<const PickleValue *> stack;
  std::vector<size_t> marks;
  llvm::DenseMap<uint64_t, const PickleValue *> memo;
  bool stopped = false;
};

llvm::Error Unpickler::pushString(Kind kind, uint64_t length) {
  const uint8_t *p;
  if (!take(length, p)) {
    return fail(llvm::formatv("a {0}-byte string runs past the end", length));
  }
  PickleValue *v = make(kind);
  v->text.assign(reinterpret_cast<const char *>(p), length);
  stack.push_back(v);
  return llvm::Error::success();
}

llvm::Error Unpickler::global(llvm::StringRef module,
                              llvm::StringRef className) {
  if (!isAllowedGlobal(module, className)) {
    return fail("refuses the global '" + module + "." + className +
                "': a torch state dict never needs it, and moec does not run "
                "code from checkpoints");
  }
  PickleValue *v = make(Kind::Global);
  v->text = (module + "." + className).str();
  stack.push_back(v);
  return llvm::Error::success();
}

llvm::Error Unpickler::persistentId() {
  auto pid = pop();
  if (!pid) {
    return pid.takeError();
  }
  // ('storage', <storage class>, key, location, numel)
  const PickleValue *t = *pid;
  if (t->kind != Kind::Tuple || t->items.size() != 5 ||
      t->items[0]->kind != Kind::String || t->items[0]->text != "storage" ||
      t->items[1]->kind != Kind::Global || t->items[2]->kind != Kind::String ||
      t->items[4]->kind != Kind::Int || t->items[4]->integer < 0) {
    return fail("has a persistent id that is not torch's ('storage', type, "
                "key, location, numel)");
  }
  llvm::StringRef cls = llvm::StringRef(t->items[1]->text);
  const StorageType *type =
      cls.consume_front("torch.") ? lookupStorageType(cls) : nullptr;
  if (!type) {
    return fail("names a storage of type '" + t->items[1]->text + "'");
  }
  PickleValue *s = make(Kind::Storage);
  s->storageType = type;
  s->text = t->items[2]->text;
  s->numel = t->items[4]->integer;
  stack.push_back(s);
  return llvm::Error::success();
}

llvm::Error Unpickler::reduce() {
  auto args = pop();
  if (!args) {
    return args.takeError();
  }
  auto callable = pop();
  if (!callable) {
    return callable.takeError();
  }
  if ((*callable)->kind != Kind::Global || (*args)->kind != Kind::Tuple) {
    return fail("calls something that is not an allowed global");
  }
  llvm::StringRef fn = (*callable)->text;
  const std::vector<const PickleValue *> &a = (*args)->items;
  if (fn == "collections.OrderedDict") {
    if (!a.empty()) {
      return fail("builds an OrderedDict from arguments");
    }
    stack.push_back(make(Kind::Dict));
    return llvm::Error::success();
  }
  if (fn == "torch.Size") {
    if (a.size() != 1 || a[0]->kind != Kind::Tuple) {
      return fail("builds a torch.Size from something not a tuple");
    }
    stack.push_back(a[0]);
    return llvm::Error::success();
  }
  if (fn == "torch._utils._rebuild_parameter") {
    // (data, requires_grad, backward_hooks): the data is the tensor.
    if (a.size() != 3 || !a[0]->isTensor()) {
      return fail("rebuilds a parameter from something not a tensor");
    }
    stack.push_back(a[0]);
    return llvm::Error::success();
  }
  if (fn == "torch._utils._rebuild_tensor_v2") {
    // (storage, offset, size, stride, requires_grad, backward_hooks
    //  [, metadata])
    auto isIntTuple = [](const PickleValue *v) {
      if (v->kind != Kind::Tuple || v->items.size() > kMaxRank) {
        return false;
      }
      for (const PickleValue *d : v->items) {
        if (d->kind != Kind::Int || d->integer < 0) {
          return false;
        }
      }
      return true;
    };
    if ((a.size() != 6 && a.size() != 7) || a[0]->kind != Kind::Storage ||
        a[1]->kind != Kind::Int || a[1]->integer < 0 || !isIntTuple(a[2]) ||
        !isIntTuple(a[3]) || a[2]->items.size() != a[3]->items.size()) {
      return fail("rebuilds a tensor from arguments that are not (storage, "
                  "offset, sizes, strides, ...) with matching ranks of at "
                  "most " +
                  llvm::Twine(kMaxRank));
    }
    PickleValue *t = make(Kind::Tensor);
    t->storage = a[0];
    t->offset = a[1]->integer;
    for (size_t i = 0; i < a[2]->items.size(); ++i) {
      t->shape.push_back(a[2]->items[i]->integer);
      t->stride.push_back(a[3]->items[i]->integer);
    }
    stack.push_back(t);
    return llvm::Error::success();
  }
  return fail("calls '" + fn + "', which builds no state-dict value");
}

llvm::Error Unpickler::build() {
  auto state = pop();
  if (!state) {
    return state.takeError();
  }
  if (stack.size() <= floor()) {
    return fail("builds on an empty stack");
  }
  // An OrderedDict's state is its `_metadata` attribute (module versions):
  // dropped. Nothing else torch writes is built.
  if (stack.back()->kind != Kind::Dict) {
    return fail("sets the state of something that is not an OrderedDict");
  }
  return llvm::Error::success();
}

llvm::Error Unpickler::step(uint8_t op) {
  uint64_t n;
  const uint8_t *p;
  auto truncated = [&] { return fail("is cut off inside an opcode"); };
  switch (op) {
  case PROTO:
    if (!readUInt(1, n)) {
      return truncated();
    }
    if (n < 2 || n > 5) {
      return fail(llvm::formatv("uses pickle protocol {0}; torch.save "
                                "writes 2 to 5",
                                n));
    }
    return llvm::Error::success();
  case FRAME:
    return readUInt(8, n) ? llvm::Error::success() : truncated();
  case STOP:
    stopped = true;
    return llvm::Error::success();
  case MARK:
    marks.push_back(stack.size());
    return llvm::Error::success();
  case POP: {
    auto v = pop();
    return v ? llvm::Error::success() : v.takeError();
  }
  case POP_MARK: {
    auto v = popToMark();
    return v ? llvm::Error::success() : v.takeError();
  }
  case DUP:
    if (stack.size() <= floor()) {
      return fail("duplicates an empty stack");
    }
    stack.push_back(stack.back());
    return llvm::Error::success();
  case NONE:
    stack.push_back(make(Kind::None));
    return llvm::Error::success();
  case NEWTRUE:
  case NEWFALSE: {
    PickleValue *v = make(Kind::Bool);
    v->boolean = op == NEWTRUE;
    stack.push_back(v);
    return llvm::Error::success();
  }
  case BININT:
  case BININT1:
  case BININT2: {
    unsigned width = op == BININT ? 4 : op == BININT1 ? 1 : 2;
    if (!readUInt(width, n)) {
      return truncated();
    }
    PickleValue *v = make(Kind::Int);
    v->integer = op == BININT ? int64_t(int32_t(uint32_t(n))) : int64_t(n);
    stack.push_back(v);
    return llvm::Error::success();
  }
  case LONG1: {
    if (!readUInt(1, n)) {
      return truncated();
    }
    if (n > 8) {
      return fail(llvm::formatv("holds a {0}-byte integer; at most 8 fit", n));
    }
    uint64_t value = 0;
    if (n && !readUInt(unsigned(n), value)) {
      return truncated();
    }
    // Two's complement of n bytes, sign-extended.
    if (n && n < 8 && (value >> (8 * n - 1)) & 1) {
      value |= ~uint64_t(0) << (8 * n);
    }
    PickleValue *v = make(Kind::Int);
    v->integer = int64_t(value);
    stack.push_back(v);
    return llvm::Error::success();
  }
  case BINFLOAT: {
    // Big-endian IEEE double.
    if (!take(8, p)) {
      return truncated();
    }
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) {
      bits = (bits << 8) | p[i];
    }
    PickleValue *v = make(Kind::Float);
    std::memcpy(&v->real, &bits, sizeof(bits));
    stack.push_back(v);
    return llvm::Error::success();
  }
  case SHORT_BINUNICODE:
  case SHORT_BINSTRING:
  case SHORT_BINBYTES:
    if (!readUInt(1, n)) {
      return truncated();
    }
    return pushString(op == SHORT_BINBYTES ? Kind::Bytes : Kind::String, n);
  case BINUNICODE:
  case BINSTRING:
  case BINBYTES:
    if (!readUInt(4, n)) {
      return truncated();
    }
    return pushString(op == BINBYTES ? Kind::Bytes : Kind::String, n);
  case BINUNICODE8:
  case BINBYTES8:
    if (!readUInt(8, n)) {
      return truncated();
    }
    return pushString(op == BINBYTES8 ? Kind::Bytes : Kind::String, n);
  case EMPTY_TUPLE:
  case EMPTY_LIST:
  case EMPTY_DICT:
    stack.push_back(make(op == EMPTY_TUPLE  ? Kind::Tuple
                         : op == EMPTY_LIST ? Kind::List
                                            : Kind::Dict));
    return llvm::Error::success();
  case TUPLE1:
  case TUPLE2:
  case TUPLE3: {
    size_t count = op - TUPLE1 + 1;
    if (stack.size() < floor() + count) {
      return fail("builds a tuple from too few values");
    }
    PickleValue *t = make(Kind::Tuple);
    t->items.assign(stack.end() - count, stack.end());
    stack.resize(stack.size() - count);
    stack.push_back(t);
    return llvm::Error::success();
  }
  case TUPLE:
  case LIST:
  case DICT: {
    auto items = popToMark();
    if (!items) {
      return items.takeError();
    }
    if (op == DICT && items->size() % 2) {
      return fail("builds a dict from an odd number of values");
    }
    PickleValue *v = make(op == TUPLE  ? Kind::Tuple
                          : op == LIST ? Kind::List
                                       : Kind::Dict);
    v->items = std::move(*items);
    stack.push_back(v);
    return llvm::Error::success();
  }
  case APPEND: {
    auto item = pop();
    if (!item) {
      return item.takeError();
    }
    auto list = container(Kind::List);
    if (!list) {
      return list.takeError();
    }
    (*list)->items.push_back(*item);
    return llvm::Error::success();
  }
  case APPENDS:
  case SETITEMS: {
    auto items = popToMark();
    if (!items) {
      return items.takeError();
    }
    auto target = container(op == APPENDS ? Kind::List : Kind::Dict);
    if (!target) {
      return target.takeError();
    }
    if (op == SETITEMS && items->size() % 2) {
      return fail("sets dict items from an odd number of values");
    }
    (*target)->items.insert((*target)->items.end(), items->begin(),
                            items->end());
    return llvm::Error::success();
  }
  case SETITEM: {
    auto dict = container(Kind::Dict, 2);
    if (!dict) {
      return dict.takeError();
    }
    const PickleValue *value = stack.back();
    const PickleValue *key = stack[stack.size() - 2];
    stack.resize(stack.size() - 2);
    (*dict)->items.push_back(key);
    (*dict)->items.push_back(value);
    return llvm::Error::success();
  }
  case BINPUT:
  case LONG_BINPUT:
  case MEMOIZE:
    if (op != MEMOIZE && !readUInt(op == BINPUT ? 1 : 4, n)) {
      return truncated();
    }
    if (op == MEMOIZE) {
      n = memo.size();
    }
    if (stack.size() <= floor()) {
      return fail("memoizes an empty stack");
    }
    memo[n] = stack.back();
    return llvm::Error::success();
  case BINGET:
  case LONG_BINGET: {
    if (!readUInt(op == BINGET ? 1 : 4, n)) {
      return truncated();
    }
    auto it = memo.find(n);
    if (it == memo.end()) {
      return fail(llvm::formatv("reads memo slot {0}, which is empty", n));
    }
    stack.push_back(it->second);
    return llvm::Error::success();
  }
  case GLOBAL: {
    // Two newline-terminated names.
    std::string parts[2];
    for (std::string &part : parts) {
      size_t start = at;
      while (at < bytes.size() && bytes[at] != '\n') {
        ++at;
      }
      if (at >= bytes.size()) {
        return truncated();
      }
      part.assign(reinterpret_cast<const char *>(bytes.data() + start),
                  at - start);
      ++at;
    }
    return global(parts[0], parts[1]);
  }
  case STACK_GLOBAL: {
    auto className = pop();
    if (!className) {
      return className.takeError();
    }
    auto module = pop();
    if (!module) {
      return module.takeError();
    }
    if ((*module)->kind != Kind::String || (*className)->kind != Kind::String) {
      return fail("names a global with something not a string");
    }
    return global((*module)->text, (*className)->text);
  }
  case REDUCE:
    return reduce();
  case BUILD:
    return build();
  case BINPERSID:
    return persistentId();
  default:
    return fail(llvm::formatv("uses opcode 0x{0:x-2}, which torch.save does "
                              "not write (refused, nothing is executed)",
                              op));
  }
}

llvm::Expected<std::unique_ptr<PickleTree>> Unpickler::run() {
  while (!stopped) {
    opAt = at;
    if (at >= bytes.size()) {
      return fail("ends without a STOP opcode (truncated?)");
    }
    uint8_t op = bytes[at++];
    if (llvm::Error e = step(op)) {
      return std::move(e);
    }
  }
  if (stack.size() != 1 || !marks.empty()) {
    return fail(llvm::formatv("stops with {0} values on the stack, not one",
                              stack.size()));
  }
  tree->setRoot(stack.back());
  return std::move(tree);
}

} // namespace

bool isAllowedGlobal(llvm::StringRef module, llvm::StringRef name) {
  if (module == "collections") {
    return name == "OrderedDict";
  }
  if (module == "torch._utils") {
    return name == "_rebuild_tensor_v2" || name == "_rebuild_parameter";
  }
  if (module == "torch") {
    return name == "Size" || lookupStorageType(name) || isTorchDTypeName(name);
  }
  return false;
}

const StorageType *lookupStorageType(llvm::StringRef className) {
  static const StorageType kTypes[] = {
      {"FloatStorage", DType::F32, 4},
      {"DoubleStorage", DType::F64, 8},
      {"HalfStorage", DType::F16, 2},
      {"BFloat16Storage", DType::BF16, 2},
      {"LongStorage", DType::I64, 8},
      {"IntStorage", DType::I32, 4},
      {"ShortStorage", DType::I16, 2},
      {"CharStorage", DType::I8, 1},
      {"ByteStorage", DType::U8, 1},
      {"BoolStorage", DType::Bool, 1},
      {"ComplexFloatStorage", DType::C64, 8},
      {"ComplexDoubleStorage", std::nullopt, 16},
      {"UInt16Storage", DType::U16, 2},
      {"UInt32Storage", DType::U32, 4},
      {"UInt64Storage", DType::U64, 8},
      {"Float8_e4m3fnStorage", DType::F8E4M3, 1},
      {"Float8_e5m2Storage", DType::F8E5M2, 1},
  };
  for (const StorageType &type : kTypes) {
    if (type.name == className) {
      return &type;
    }
  }
  return nullptr;
}

std::optional<DType> storageDType(llvm::StringRef className) {
  const StorageType *type = lookupStorageType(className);
  return type ? type->dtype : std::nullopt;
}

llvm::Expected<std::unique_ptr<PickleTree>>
unpickle(llvm::ArrayRef<uint8_t> bytes, llvm::StringRef name) {
  return Unpickler(bytes, name).run();
}

} // namespace moe::frontend
