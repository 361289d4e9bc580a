//===- Expr.cpp - Arithmetic in family descriptions -----------------------===//
//
// A recursive-descent evaluator. Expressions are a line long, so recursion
// depth is bounded by a fixed limit rather than by the text.
//
//===----------------------------------------------------------------------===//

#include "frontends/family/Expr.h"

#include "frontends/checkpoint/Errors.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cctype>
#include <cmath>

namespace moe::frontend {

namespace {

constexpr int kMaxDepth = 64;

class Parser {
public:
  Parser(llvm::StringRef text, const ExprEnv &env) : text(text), env(env) {}

  llvm::Expected<double> parseAll() {
    auto value = parseExpr();
    if (!value) {
      return value.takeError();
    }
    skipSpace();
    if (pos != text.size()) {
      return fail(llvm::formatv("unexpected '{0}'", text.substr(pos)));
    }
    return value;
  }

private:
  llvm::Error fail(const llvm::Twine &why) {
    return makeError(llvm::formatv("in expression '{0}' at column {1}: {2}",
                                   text, pos + 1, why.str()));
  }

  void skipSpace() {
    while (pos < text.size() &&
           std::isspace(static_cast<unsigned char>(text[pos]))) {
      ++pos;
    }
  }

  bool consume(char c) {
    skipSpace();
    if (pos < text.size() && text[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }

  llvm::StringRef parseName() {
    skipSpace();
    size_t start = pos;
    while (pos < text.size() &&
           (std::isalnum(static_cast<unsigned char>(text[pos])) ||
            text[pos] == '_')) {
      ++pos;
    }
    return text.slice(start, pos);
  }

  llvm::Expected<double> parseExpr() {
    if (++depth > kMaxDepth) {
      return fail("expression nests too deeply");
    }
    auto lhs = parseTerm();
    while (lhs) {
      if (consume('+')) {
        auto rhs = parseTerm();
        if (!rhs) {
          return rhs;
        }
        *lhs += *rhs;
      } else if (consume('-')) {
        auto rhs = parseTerm();
        if (!rhs) {
          return rhs;
        }
        *lhs -= *rhs;
      } else {
        break;
      }
    }
    --depth;
    return lhs;
  }

  llvm::Expected<double> parseTerm() {
    auto lhs = parseUnary();
    while (lhs) {
      if (consume('*')) {
        auto rhs = parseUnary();
        if (!rhs) {
          return rhs;
        }
        *lhs *= *rhs;
      } else if (consume('/')) {
        auto rhs = parseUnary();
        if (!rhs) {
          return rhs;
        }
        if (*rhs == 0) {
          return fail("division by zero");
        }
        *lhs /= *rhs;
      } else {
        break;
      }
    }
    return lhs;
  }

  llvm::Expected<double> parseUnary() {
    if (consume('-')) {
      if (++depth > kMaxDepth) {
        return fail("expression nests too deeply");
      }
      auto value = parseUnary();
      --depth;
      if (!value) {
        return value;
      }
      return -*value;
    }
    return parsePrimary();
  }

  llvm::Expected<double> parseNumber() {
    size_t start = pos;
    while (pos < text.size() &&
           (std::isdigit(static_cast<unsigned char>(text[pos])) ||
            text[pos] == '.' || text[pos] == 'e' || text[pos] == 'E' ||
            ((text[pos] == '-' || text[pos] == '+') && pos > start &&
             (text[pos - 1] == 'e' || text[pos - 1] == 'E')))) {
      ++pos;
    }
    double value;
    if (text.slice(start, pos).getAsDouble(value)) {
      return fail(
          llvm::formatv("'{0}' is not a number", text.slice(start, pos)));
    }
    return value;
  }

  llvm::Expected<double> parsePrimary() {
    skipSpace();
    if (pos >= text.size()) {
      return fail("expected a value");
    }
    if (consume('(')) {
      auto value = parseExpr();
      if (!value) {
        return value;
      }
      if (!consume(')')) {
        return fail("expected ')'");
      }
      return value;
    }
    if (std::isdigit(static_cast<unsigned char>(text[pos])) ||
        text[pos] == '.') {
      return parseNumber();
    }
    llvm::StringRef name = parseName();
    if (name.empty()) {
      return fail(llvm::formatv("unexpected '{0}'", text.substr(pos, 1)));
    }
    if (!consume('(')) {
      auto value = env.lookup ? env.lookup(name)
                              : llvm::Expected<double>(fail("no names here"));
      if (!value) {
        return fail(llvm::toString(value.takeError()));
      }
      return value;
    }
    return parseCall(name);
  }

  /// An argument is a bare name when it is a name followed by ',' or ')';
  /// otherwise an expression.
  llvm::Expected<ExprArg> parseArg() {
    skipSpace();
    size_t save = pos;
    llvm::StringRef name = parseName();
    if (!name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]))) {
      skipSpace();
      if (pos < text.size() && (text[pos] == ',' || text[pos] == ')')) {
        return ExprArg(name.str());
      }
    }
    pos = save;
    auto value = parseExpr();
    if (!value) {
      return value.takeError();
    }
    return ExprArg(*value);
  }

  llvm::Expected<double> parseCall(llvm::StringRef function) {
    std::vector<ExprArg> args;
    if (!consume(')')) {
      do {
        auto arg = parseArg();
        if (!arg) {
          return arg.takeError();
        }
        args.push_back(*arg);
      } while (consume(','));
      if (!consume(')')) {
        return fail("expected ')' after the arguments of " + function);
      }
    }
    // Built-ins take numbers; a bare name argument is looked up.
    auto number = [&](size_t i) -> llvm::Expected<double> {
      if (auto *value = std::get_if<double>(&args[i])) {
        return *value;
      }
      auto value = env.lookup ? env.lookup(std::get<std::string>(args[i]))
                              : llvm::Expected<double>(fail("no names here"));
      if (!value) {
        return fail(llvm::toString(value.takeError()));
      }
      return value;
    };
    auto arity = [&](size_t n) -> llvm::Error {
      if (args.size() != n) {
        return fail(llvm::formatv("{0} takes {1} argument(s), got {2}",
                                  function, n, args.size()));
      }
      return llvm::Error::success();
    };
    if (function == "sqrt" || function == "pow" || function == "min" ||
        function == "max") {
      if (auto err = arity(function == "sqrt" ? 1 : 2)) {
        return std::move(err);
      }
      auto a = number(0);
      if (!a) {
        return a;
      }
      if (function == "sqrt") {
        if (*a < 0) {
          return fail("sqrt of a negative number");
        }
        return std::sqrt(*a);
      }
      auto b = number(1);
      if (!b) {
        return b;
      }
      if (function == "pow") {
        return std::pow(*a, *b);
      }
      return function == "min" ? std::min(*a, *b) : std::max(*a, *b);
    }
    if (!env.call) {
      return fail("unknown function " + function);
    }
    auto value = env.call(function, args);
    if (!value) {
      return fail(llvm::toString(value.takeError()));
    }
    return value;
  }

  llvm::StringRef text;
  const ExprEnv &env;
  size_t pos = 0;
  int depth = 0;
};

} // namespace

llvm::Expected<double> evaluateExpr(llvm::StringRef text, const ExprEnv &env) {
  return Parser(text, env).parseAll();
}

} // namespace moe::frontend
