// Microbenchmark of the C++ evaluator's kernels (AVX2 unless -DBENCH_ISA=isa_avx512, 512-bit, or isa_base) on the default space's layer shapes (one
// thread, 8 images per call as the evaluator runs them). Built and run by tools/bench_kernels.sh,
// which compiles in cpp_kernels/evaluator.cpp of this checkout and, optionally, of an earlier commit.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include EVALUATOR  // the evaluator's own translation unit: its kernel tables and types, no copies here

using codesign::eval::Act;
#ifndef BENCH_ISA
#define BENCH_ISA isa_avx2
#endif
namespace isa = codesign::eval::BENCH_ISA;

template <class F>
static double seconds_per_call(F f, double work) {
  const int reps = static_cast<int>(1e9 / work) + 1;
  f();
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

int main() {
  const int64_t n = 8;
  struct Pw { int64_t hw, K, N; };
  const Pw pws[] = {{196, 24, 144}, {49, 144, 24}, {49, 48, 288}, {49, 288, 48}, {16, 96, 384}, {16, 384, 96}, {16, 96, 192}};
  for (const Pw& s : pws) {
    const int64_t P = n * s.hw;
    std::vector<float> x(P * s.K, 0.5f), w(s.K * s.N, 0.01f), o(P * s.N), shift(s.N, 0.0f);
    std::vector<double> sum(s.N), sq(s.N);
    const double flops = 2.0 * P * s.K * s.N;
    const double t = seconds_per_call([&] {
      isa::kTable.pointwise(x.data(), P, s.K, s.K, w.data(), s.N, nullptr, Act::kNone, nullptr, o.data(), shift.data(),
                            sum.data(), sq.data());
    }, flops);
    std::printf("pointwise P=%4ld K=%3ld N=%3ld   %8.1f us  %5.1f GFLOPS\n", static_cast<long>(P), static_cast<long>(s.K),
                static_cast<long>(s.N), t * 1e6, flops / t / 1e9);
  }
  struct Dw { int64_t H, C, k, s; };
  const Dw dws[] = {{14, 96, 3, 2}, {14, 144, 5, 2}, {7, 144, 3, 1}, {7, 144, 5, 1}, {7, 144, 7, 1},
                    {7, 288, 7, 1}, {4, 384, 3, 1}, {4, 384, 5, 1}, {7, 288, 5, 2}};
  double total = 0.0;
  for (const Dw& s : dws) {
    const int64_t OH = (s.H + s.s - 1) / s.s;
    std::vector<float> x(n * s.H * s.H * s.C, 0.5f), w(s.k * s.k * s.C, 0.01f), o(n * OH * OH * s.C), b(s.C, 0.1f);
    const double macs = static_cast<double>(n) * OH * OH * s.C * s.k * s.k;
    const double t = seconds_per_call([&] {
      isa::kTable.depthwise(x.data(), n, s.H, s.H, s.C, w.data(), s.k, s.s, b.data(), Act::kReLU, o.data(), OH, OH);
    }, macs);
    total += t;
    std::printf("depthwise %2ldpx C=%3ld k=%ld s=%ld  %8.1f us  %5.1f GFLOPS (taps over padding counted)\n",
                static_cast<long>(s.H), static_cast<long>(s.C), static_cast<long>(s.k), static_cast<long>(s.s), t * 1e6,
                2 * macs / t / 1e9);
  }
  std::printf("depthwise total %.1f us\n", total * 1e6);
  return 0;
}
