#pragma once
// Internal: argument checks shared by the experts.
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include <mpq/expert.h>

namespace mpq::detail {

// Every layer: a finite floating [out, in] weight with the same `in`; a non-empty list.
void check_layers(const std::vector<ExpertLayer>& layers, std::string_view expert);

// check_layers, and `stats` present, with tokens and in_features matching the layers
// (`need_xtx`: XᵀX collected).
void check_stats(const std::vector<ExpertLayer>& layers, const LayerStats* stats,
                 std::string_view expert, bool need_xtx = false);

// The Hessian when the stats hold XᵀX for these layers, else an undefined tensor.
at::Tensor optional_hessian(const std::vector<ExpertLayer>& layers, const LayerStats* stats);

// "blk.0.attn_q, blk.0.attn_k"
std::string layer_names(const std::vector<ExpertLayer>& layers);

}  // namespace mpq::detail
