//===- Expr.h - Arithmetic in family descriptions ---------------*- C++ -*-===//
//
// Family descriptions state sizes and settings as small expressions:
// `n_heads * head_dim`, `sqrt(mup_base_d / d_model)`, `shape(q_norm, 0)`.
// This evaluates them over names and functions the caller resolves, so one
// grammar serves dims (from tensor shapes), settings and shape checks.
//
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | '/') unary)*
//   unary   := '-' unary | primary
//   primary := number | name | name '(' args ')' | '(' expr ')'
//   args    := (name | expr) (',' (name | expr))*
//
// Built-in functions: sqrt, pow, min, max. Any other function call goes to
// the caller, with its arguments as raw names or evaluated numbers.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTENDS_FAMILY_EXPR_H
#define MOE_FRONTENDS_FAMILY_EXPR_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <string>
#include <variant>
#include <vector>

namespace moe::frontend {

/// An argument of a caller-resolved function: a bare name, or a number.
using ExprArg = std::variant<std::string, double>;

struct ExprEnv {
  /// Resolves a name to its value; an Error says why it has none.
  std::function<llvm::Expected<double>(llvm::StringRef name)> lookup;
  /// Resolves a call to a function that is not built in.
  std::function<llvm::Expected<double>(llvm::StringRef function,
                                       const std::vector<ExprArg> &args)>
      call;
};

/// Evaluates `text`. Errors quote the expression and say what is wrong.
llvm::Expected<double> evaluateExpr(llvm::StringRef text, const ExprEnv &env);

} // namespace moe::frontend

#endif // MOE_FRONTENDS_FAMILY_EXPR_H
