// Channel-importance scores for dependency-group pruning.
#pragma once

#include <cstdint>
#include <vector>

namespace codesign {

// One weight tensor viewed as a (channels x row_length) row-major matrix whose row c holds every
// weight that touches channel c of the dependency group.
struct ChannelMatrix {
  const float* data;
  int64_t channels;
  int64_t row_length;
};

// Group importance: for every tensor, the L1 norm of each channel's row divided by the mean row
// norm of that tensor (so tensors of different size weigh equally), summed over the tensors.
// All tensors must have the same channel count. `out` must hold `channels` floats.
void group_l1_importance(const std::vector<ChannelMatrix>& tensors, float* out, int num_threads);

// Channel indices sorted by descending score; ties keep the lower index first.
std::vector<int64_t> rank_channels(const float* scores, int64_t n);

}  // namespace codesign
