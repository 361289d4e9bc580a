//===- QuantPolicy.cpp - Which weights quantize to which format -----------===//

#include "dialects/MoE/Transforms/QuantPolicy.h"

#include "llvm/ADT/StringSwitch.h"

namespace mlir::moe {

namespace {

constexpr WeightRole kRoles[kNumWeightRoles] = {
    WeightRole::Embedding, WeightRole::Head, WeightRole::Attention,
    WeightRole::Ffn, WeightRole::Experts};

llvm::Error policyError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

/// q8, q4, q2, q1, each with an `a` for asymmetric, or f32 (keep float);
/// nullopt when `text` is none of them.
std::optional<QuantChoice> parsePrecision(llvm::StringRef text) {
  if (text == "f32") {
    return QuantChoice(std::nullopt);
  }
  bool asymmetric = text.consume_back("a");
  std::optional<PackedFormat> format =
      llvm::StringSwitch<std::optional<PackedFormat>>(text)
          .Case("q8", PackedFormat::Int8)
          .Case("q4", PackedFormat::Int4)
          .Case("q2", PackedFormat::Int2)
          .Case("q1", PackedFormat::Sign1)
          .Default(std::nullopt);
  if (!format) {
    return std::nullopt;
  }
  return QuantChoice(QuantFormat{*format, asymmetric});
}

/// Applies the comma-separated `key=precision` rules of `rules`.
llvm::Error applyRules(QuantPolicy &policy, llvm::StringRef rules) {
  llvm::SmallVector<llvm::StringRef> items;
  rules.split(items, ',', /*MaxSplit=*/-1, /*KeepEmpty=*/false);
  for (llvm::StringRef item : items) {
    auto [key, value] = item.trim().split('=');
    key = key.trim();
    value = value.trim();
    std::optional<QuantChoice> choice = parsePrecision(value);
    if (key.empty() || !choice) {
      return policyError("'" + item.trim() +
                         "': expected ROLE=PRECISION or GLOB=PRECISION, "
                         "with PRECISION one of q8, q4, q2, q1, q8a, q4a, "
                         "q2a, q1a, f32");
    }
    bool isRole = false;
    for (WeightRole role : kRoles) {
      if (key == weightRoleName(role)) {
        policy.byRole[static_cast<int>(role)] = *choice;
        isRole = true;
      }
    }
    if (isRole) {
      continue;
    }
    if (!key.contains('*') && !key.contains('?') && !key.contains('.') &&
        !key.contains('[')) {
      return policyError("'" + key +
                         "' is neither a role (embedding, head, attention, "
                         "ffn, experts) nor a glob on tensor names");
    }
    llvm::Expected<llvm::GlobPattern> glob = llvm::GlobPattern::create(key);
    if (!glob) {
      return policyError("'" + key +
                         "': bad glob: " + llvm::toString(glob.takeError()));
    }
    policy.byName.emplace_back(std::move(*glob), *choice);
  }
  return llvm::Error::success();
}

} // namespace

llvm::StringRef weightRoleName(WeightRole role) {
  switch (role) {
  case WeightRole::Embedding:
    return "embedding";
  case WeightRole::Head:
    return "head";
  case WeightRole::Attention:
    return "attention";
  case WeightRole::Ffn:
    return "ffn";
  case WeightRole::Experts:
    return "experts";
  }
  llvm_unreachable("unknown weight role");
}

QuantChoice QuantPolicy::choose(WeightRole role,
                                llvm::ArrayRef<llvm::StringRef> sources) const {
  for (const auto &[glob, choice] : byName) {
    for (llvm::StringRef name : sources) {
      if (glob.match(name)) {
        return choice;
      }
    }
  }
  return byRole[static_cast<int>(role)];
}

llvm::Expected<QuantPolicy> parseQuantPolicy(llvm::StringRef mode,
                                             llvm::StringRef overrides) {
  QuantPolicy policy;
  if (mode == "mixed") {
    if (llvm::Error err = applyRules(policy, kMixedPolicy)) {
      return std::move(err);
    }
  } else if (std::optional<QuantChoice> uniform = parsePrecision(mode);
             uniform && *uniform) {
    for (QuantChoice &choice : policy.byRole) {
      choice = *uniform;
    }
  } else if (mode != "none") {
    return policyError("'" + mode +
                       "': expected q8, q4, q2, q1, q8a, q4a, q2a, q1a, "
                       "mixed or none");
  }
  if (llvm::Error err = applyRules(policy, overrides)) {
    return std::move(err);
  }
  return policy;
}

} // namespace mlir::moe
