//===- ExprTest.cpp - Arithmetic in family descriptions -------------------===//

#include "frontends/family/Expr.h"

#include <cmath>
#include <gtest/gtest.h>

using namespace moe::frontend;

namespace {

ExprEnv testEnv() {
  ExprEnv env;
  env.lookup = [](llvm::StringRef name) -> llvm::Expected<double> {
    if (name == "d_model") {
      return 640.0;
    }
    if (name == "heads") {
      return 10.0;
    }
    return llvm::createStringError("unknown name '" + name + "'");
  };
  env.call = [](llvm::StringRef function,
                const std::vector<ExprArg> &args) -> llvm::Expected<double> {
    if (function == "shape" && args.size() == 2 &&
        std::holds_alternative<std::string>(args[0])) {
      return std::get<std::string>(args[0]) == "embedding"
                 ? 512.0 + std::get<double>(args[1])
                 : 0.0;
    }
    return llvm::createStringError("no function " + function);
  };
  return env;
}

double eval(const char *text) {
  auto value = evaluateExpr(text, testEnv());
  EXPECT_TRUE(static_cast<bool>(value)) << llvm::toString(value.takeError());
  return value ? *value : NAN;
}

std::string error(const char *text) {
  auto value = evaluateExpr(text, testEnv());
  if (value) {
    return "";
  }
  return llvm::toString(value.takeError());
}

TEST(Expr, Arithmetic) {
  EXPECT_EQ(eval("1 + 2 * 3"), 7);
  EXPECT_EQ(eval("(1 + 2) * 3"), 9);
  EXPECT_EQ(eval("-2 - -3"), 1);
  EXPECT_EQ(eval("d_model / heads"), 64);
  EXPECT_EQ(eval("1e-6 * 1e6"), 1);
  EXPECT_EQ(eval("2.5E+1"), 25);
}

TEST(Expr, Functions) {
  EXPECT_DOUBLE_EQ(eval("sqrt(512 / d_model)"), std::sqrt(512.0 / 640.0));
  EXPECT_EQ(eval("pow(2, 10)"), 1024);
  EXPECT_EQ(eval("min(heads, 3) + max(1, 2)"), 5);
  EXPECT_EQ(eval("shape(embedding, 1)"), 513);
  EXPECT_EQ(eval("shape(embedding, heads - 9) * 2"), 1026);
}

TEST(Expr, Errors) {
  EXPECT_NE(error("1 / 0").find("division by zero"), std::string::npos);
  EXPECT_NE(error("vocab").find("unknown name 'vocab'"), std::string::npos);
  EXPECT_NE(error("(1 + 2").find("expected ')'"), std::string::npos);
  EXPECT_NE(error("1 +").find("expected a value"), std::string::npos);
  EXPECT_NE(error("2 3").find("unexpected '3'"), std::string::npos);
  EXPECT_NE(error("sqrt(1, 2)").find("sqrt takes 1 argument"),
            std::string::npos);
  EXPECT_NE(error("sqrt(-1)").find("negative"), std::string::npos);
  EXPECT_NE(error("frob(1)").find("no function frob"), std::string::npos);
  EXPECT_NE(error("1.2.3").find("is not a number"), std::string::npos);
  std::string deep(200, '(');
  deep += "1" + std::string(200, ')');
  EXPECT_NE(error(deep.c_str()).find("nests too deeply"), std::string::npos);
  // Errors quote the expression and the column.
  EXPECT_NE(error("1 + x").find("in expression '1 + x' at column"),
            std::string::npos);
}

} // namespace
