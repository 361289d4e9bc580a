//===- QuantPolicy.h - Which weights quantize to which format --*- C++ -*-===//
//
// `moec compile --quant=MODE [--quant-policy=RULES]` names a precision per
// weight role (or per checkpoint-name glob). The driver parses it to report
// a bad flag before any work, and moe-quantize-weights applies it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECTS_MOE_TRANSFORMS_QUANTPOLICY_H
#define MOE_DIALECTS_MOE_TRANSFORMS_QUANTPOLICY_H

#include "dialects/MoE/IR/MoEDialect.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/GlobPattern.h"

#include <optional>
#include <string>
#include <vector>

namespace mlir::moe {

/// The roles a quantizable weight plays, found from its users.
enum class WeightRole {
  Embedding, // the token embedding (and the head, when tied to it)
  Head,      // an untied output head
  Attention, // query, key, value and output projections
  Ffn,       // dense and shared-expert feed-forward projections
  Experts,   // routed experts' stacked gate, up and down
};
constexpr int kNumWeightRoles = 5;

/// The role's name in `--quant-policy`.
llvm::StringRef weightRoleName(WeightRole role);

/// A packed format, symmetric (`scale * code`) or asymmetric (`scale *
/// code + offset`, precisions with an `a`: q4a).
struct QuantFormat {
  PackedFormat format;
  bool asymmetric = false;
};

/// A precision: a packed format, or none to keep the weight in float.
using QuantChoice = std::optional<QuantFormat>;

struct QuantPolicy {
  QuantChoice byRole[kNumWeightRoles];
  /// `glob=precision` rules on checkpoint names, tried in order before
  /// the role: the first whose glob matches any source name wins.
  std::vector<std::pair<llvm::GlobPattern, QuantChoice>> byName;

  QuantChoice choose(WeightRole role,
                     llvm::ArrayRef<llvm::StringRef> sources) const;
};

/// The policy of `mode` (q8, q4, q2, q1, their asymmetric q8a, q4a, q2a,
/// q1a, or mixed) with the comma-separated `key=precision` rules of
/// `overrides` on top; a key is a role name or a glob on checkpoint names,
/// a precision one of the modes but mixed, or f32.
llvm::Expected<QuantPolicy> parseQuantPolicy(llvm::StringRef mode,
                                             llvm::StringRef overrides);

/// What `--quant=mixed` means without overrides. Asymmetric 4-bit codes for
/// attention and experts: on the bundled model (docs/quantization.md) they
/// cut the KL divergence from the f32 model by a third against symmetric
/// ones (0.0050 -> 0.0032 nats) for 6% more bytes.
constexpr const char *kMixedPolicy =
    "embedding=q8,head=q8,attention=q4a,ffn=q8,experts=q4a";

} // namespace mlir::moe

#endif // MOE_DIALECTS_MOE_TRANSFORMS_QUANTPOLICY_H
