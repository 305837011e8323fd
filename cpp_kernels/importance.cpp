#include "importance.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <thread>

namespace codesign {

namespace {

void row_l1_norms(const ChannelMatrix& m, double* norms, int num_threads) {
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float* row = m.data + c * m.row_length;
      double acc = 0.0;
      for (int64_t j = 0; j < m.row_length; ++j) acc += std::fabs(static_cast<double>(row[j]));
      norms[c] = acc;
    }
  };
  const int64_t total = m.channels * m.row_length;
  const int threads = (num_threads > 1 && total > (1 << 16)) ? num_threads : 1;
  if (threads == 1) {
    work(0, m.channels);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (m.channels + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t b = t * chunk, e = std::min(m.channels, b + chunk);
    if (b < e) pool.emplace_back(work, b, e);
  }
  for (auto& th : pool) th.join();
}

}  // namespace

void group_l1_importance(const std::vector<ChannelMatrix>& tensors, float* out, int num_threads) {
  if (tensors.empty()) throw std::invalid_argument("group_l1_importance needs at least one tensor");
  const int64_t channels = tensors.front().channels;
  std::vector<double> total(channels, 0.0), norms(channels);
  for (const auto& m : tensors) {
    if (m.channels != channels)
      throw std::invalid_argument("all tensors of a dependency group must have the same channel count");
    row_l1_norms(m, norms.data(), num_threads);
    const double mean = std::accumulate(norms.begin(), norms.end(), 0.0) / static_cast<double>(channels);
    const double scale = mean > 0.0 ? 1.0 / mean : 0.0;
    for (int64_t c = 0; c < channels; ++c) total[c] += norms[c] * scale;
  }
  for (int64_t c = 0; c < channels; ++c) out[c] = static_cast<float>(total[c]);
}

std::vector<int64_t> rank_channels(const float* scores, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [scores](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  return order;
}

}  // namespace codesign
