//===- DotBlocks.h - The byte order of dot(D) codes -------------*- C++ -*-===//
//
// One formula for the byte order of `dot(D)` codes (and `panels(P)`), shared
// by the weight writer (integers) and the CPU kernels (Halide expressions).
// Deliberately free of MLIR headers: the kernels' sources call Halide's
// unqualified cast<T>(Expr) from inside namespace mlir, where MLIR's
// headers would make it llvm::cast and compile to something else.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_UTILS_DOTBLOCKS_H
#define MOE_DIALECTS_MOE_UTILS_DOTBLOCKS_H

namespace mlir::moe {

/// The first byte of `dot(D)` block `block` (of `blocksPerRow`) of row
/// `row` of a matrix of `rows` rows, the rows in panels of `panels` rows
/// when it is not 0: the layout of moe.dequantize's `dot(D) panels(P)`.
/// `T` is an integer type or a Halide::Expr.
template <typename T>
T dotBlockByte(T block, T row, int rows, int blocksPerRow, int depth,
               int panels) {
  if (panels > 0) {
    return ((row / panels * blocksPerRow + block) * panels + row % panels) *
           depth;
  }
  return (block * rows + row) * depth;
}

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_UTILS_DOTBLOCKS_H
