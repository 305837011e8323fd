#include "evaluator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace codesign {
namespace eval {

namespace {

typedef float V8 __attribute__((vector_size(32)));

// Allocates on 64-byte (cache line) boundaries: a 512-bit load from a 16-byte aligned buffer (what
// malloc gives) spans two cache lines.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const noexcept {
    return false;
  }
};

// Activations and packed weights the vector kernels read.
using Floats = std::vector<float, CacheLineAllocator<float>>;

// The kernels of one instruction set (see evaluator_kernels.inc).
struct KernelTable {
  void (*pointwise)(const float*, int64_t, int64_t, int64_t, const float*, int64_t, const float*, Act, const float*,
                    float*, const float*, double*, double*);
  void (*depthwise)(const float*, int64_t, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, Act,
                    float*, int64_t, int64_t);
  void (*stem)(const float*, int64_t, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, const float*,
               Act, float*, int64_t, int64_t);
  void (*bn_apply)(float*, int64_t, int64_t, const float*, const float*, Act, const float*);
  void (*channel_stats)(const float*, int64_t, int64_t, const float*, double*, double*);
};

// Fully unrolls a loop with a small compile-time trip count, so its arrays live in registers.
#if defined(__clang__)
#define CODESIGN_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define CODESIGN_UNROLL _Pragma("GCC unroll 8")
#else
#define CODESIGN_UNROLL
#endif

namespace isa_base {
#include "evaluator_kernels.inc"
}  // namespace isa_base

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CODESIGN_HAVE_AVX2_PATH 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace isa_avx2 {
#include "evaluator_kernels.inc"
}  // namespace isa_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// The same code under AVX-512: 32 vector registers instead of 16, compares into mask registers,
// and 512-bit vectors (CODESIGN_WIDE_VECTORS) in the pointwise, depthwise and BN-apply kernels.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#define CODESIGN_WIDE_VECTORS 1
namespace isa_avx512 {
#include "evaluator_kernels.inc"
}  // namespace isa_avx512
#undef CODESIGN_WIDE_VECTORS
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

struct IsaEntry {
  const char* name;
  const KernelTable* table;
};

// The instruction sets this CPU runs, slowest first.
const std::vector<IsaEntry>& cpu_isas() {
  static const std::vector<IsaEntry> isas = [] {
    std::vector<IsaEntry> found{{"base", &isa_base::kTable}};
#ifdef CODESIGN_HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      found.push_back({"avx2", &isa_avx2::kTable});
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        found.push_back({"avx512", &isa_avx512::kTable});
    }
#endif
    return found;
  }();
  return isas;
}

const IsaEntry& find_isa(const std::string& name, const char* origin) {
  for (const IsaEntry& entry : cpu_isas())
    if (name == entry.name) return entry;
  std::string names;
  for (const IsaEntry& entry : cpu_isas()) names += (names.empty() ? "" : ", ") + std::string(entry.name);
  throw std::invalid_argument(std::string(origin) + "'" + name + "' is not an instruction set this CPU runs (" +
                              names + ")");
}

std::atomic<const IsaEntry*> g_active_isa{nullptr};

const IsaEntry& active_isa_entry() {
  const IsaEntry* entry = g_active_isa.load(std::memory_order_acquire);
  if (entry == nullptr) {
    const char* cap = std::getenv("CODESIGN_EVAL_ISA");
    entry = cap != nullptr && *cap != '\0' ? &find_isa(cap, "CODESIGN_EVAL_ISA=") : &cpu_isas().back();
    g_active_isa.store(entry, std::memory_order_release);
  }
  return *entry;
}

const KernelTable& kernels() { return *active_isa_entry().table; }

constexpr int64_t kEvalChunk = 8;  // images per inference step (keeps activations in L2)

int64_t pad8(int64_t c) { return (c + 7) / 8 * 8; }
int64_t out_size(int64_t size, int64_t stride) { return (size + stride - 1) / stride; }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

void check_shape(const Tensor& t, const std::vector<int64_t>& want, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : want) n *= d;
  if (t.shape != want || t.numel() != n)
    throw std::invalid_argument(what + " has shape " + shape_str(t.shape) + ", expected " + shape_str(want));
}

void check_bn(const BatchNorm& bn, int64_t channels, const std::string& what) {
  check_shape(bn.weight, {channels}, what + ".weight");
  check_shape(bn.bias, {channels}, what + ".bias");
  check_shape(bn.running_mean, {channels}, what + ".running_mean");
  check_shape(bn.running_var, {channels}, what + ".running_var");
}

enum class Kind { kStem, kPointwise, kDepthwise };

// One convolution + BN (+ activation, + residual) of a resolved subnet.
struct Layer {
  Kind kind = Kind::kPointwise;
  int64_t cin = 0, cout = 0, cin_p = 0, cout_p = 0, k = 1, stride = 1;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  Act act = Act::kNone;
  bool residual = false;  // adds the block input after BN (project layers of residual blocks)
  const Tensor* src = nullptr;
  const BatchNorm* bn = nullptr;
  Floats w, bias;                             // packed weights (BN folded in for inference)
  std::vector<double> run_mean, run_var;      // recalibrated statistics
  Floats bn_scale, bn_shift;                  // train-mode BN of the current batch (Cp long)
  int64_t batches = 0;
};

// A subnet resolved against the supernet: its layers.
struct Program {
  std::vector<Layer> layers;  // stem, (expand, depthwise, project) per block, head
};

Program build_program(const NetSpec& spec, const SubnetPlan& plan) {
  Program prog;
  int64_t h = plan.resolution;
  auto add = [&](Kind kind, int64_t cin, int64_t cout, int64_t k, int64_t stride, Act act, bool residual,
                 const Tensor* src, const BatchNorm* bn) {
    Layer L;
    L.kind = kind;
    L.cin = cin;
    L.cout = cout;
    L.cin_p = pad8(cin);
    L.cout_p = pad8(cout);
    L.k = k;
    L.stride = stride;
    L.in_h = L.in_w = h;
    h = out_size(h, stride);
    L.out_h = L.out_w = h;
    L.act = act;
    L.residual = residual;
    L.src = src;
    L.bn = bn;
    prog.layers.push_back(std::move(L));
  };
  add(Kind::kStem, spec.in_channels, spec.stem_out, spec.stem_kernel, spec.stem_stride, spec.stem_act, false,
      &spec.stem_w, &spec.stem_bn);
  int64_t in = spec.stem_out;
  for (const BlockChoice& b : plan.blocks) {
    const SlotSpec& s = spec.slots[b.slot];
    add(Kind::kPointwise, in, b.mid, 1, 1, s.act, false, &s.expand_w, &s.expand_bn);
    add(Kind::kDepthwise, b.mid, b.mid, b.kernel, s.stride, s.act, false, &s.depthwise_w, &s.depthwise_bn);
    add(Kind::kPointwise, b.mid, b.out, 1, 1, Act::kNone, s.residual, &s.project_w, &s.project_bn);
    in = b.out;
  }
  add(Kind::kPointwise, in, spec.head_out, 1, 1, spec.head_act, false, &spec.head_w, &spec.head_bn);
  return prog;
}

// Packs a layer's weights; with scale/shift (per output channel) BN is folded in.
void pack(Layer& L, const double* scale, const double* shift) {
  const float* src = L.src->data.data();
  const auto& shape = L.src->shape;
  auto sc = [&](int64_t co) { return scale ? scale[co] : 1.0; };
  L.bias.assign(L.cout_p, 0.0f);
  if (shift)
    for (int64_t co = 0; co < L.cout; ++co) L.bias[co] = static_cast<float>(shift[co]);
  switch (L.kind) {
    case Kind::kStem: {
      const int64_t kk = L.k * L.k;
      L.w.assign(L.cin * kk * L.cout_p, 0.0f);
      for (int64_t co = 0; co < L.cout; ++co)
        for (int64_t j = 0; j < L.cin * kk; ++j)
          L.w[j * L.cout_p + co] = static_cast<float>(src[co * L.cin * kk + j] * sc(co));
      break;
    }
    case Kind::kPointwise: {
      const int64_t ld = shape[1];
      L.w.assign(L.cin * L.cout_p, 0.0f);
      for (int64_t co = 0; co < L.cout; ++co)
        for (int64_t ci = 0; ci < L.cin; ++ci)
          L.w[ci * L.cout_p + co] = static_cast<float>(src[co * ld + ci] * sc(co));
      break;
    }
    case Kind::kDepthwise: {
      const int64_t full = shape[2], off = (full - L.k) / 2;
      L.w.assign(L.k * L.k * L.cout_p, 0.0f);
      for (int64_t c = 0; c < L.cout; ++c)
        for (int64_t kh = 0; kh < L.k; ++kh)
          for (int64_t kw = 0; kw < L.k; ++kw)
            L.w[(kh * L.k + kw) * L.cout_p + c] =
                static_cast<float>(src[(c * full + kh + off) * full + kw + off] * sc(c));
      break;
    }
  }
}

// Packs with BN folded, from the recalibrated statistics or the supernet's running statistics.
void pack_folded(Layer& L, bool recalibrated, float eps) {
  std::vector<double> scale(L.cout), shift(L.cout);
  const BatchNorm& bn = *L.bn;
  for (int64_t c = 0; c < L.cout; ++c) {
    const double mean = recalibrated ? L.run_mean[c] : bn.running_mean.data[c];
    const double var = recalibrated ? L.run_var[c] : bn.running_var.data[c];
    const double s = bn.weight.data[c] / std::sqrt(var + static_cast<double>(eps));
    scale[c] = s;
    shift[c] = bn.bias.data[c] - mean * s;
  }
  pack(L, scale.data(), shift.data());
}

struct Aborted {};

// Barrier for a team of threads; throws Aborted when another member failed.
class SpinBarrier {
 public:
  SpinBarrier(int size, const std::atomic<bool>* abort) : size_(size), abort_(abort) {}
  void wait() {
    if (size_ == 1) return;
    const int gen = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == size_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    while (generation_.load(std::memory_order_acquire) == gen) {
      if (abort_->load(std::memory_order_relaxed)) throw Aborted{};
      std::this_thread::yield();
    }
  }

 private:
  int size_;
  const std::atomic<bool>* abort_;
  std::atomic<int> count_{0};
  std::atomic<int> generation_{0};
};

// State shared by the threads that work on one request together.
struct Team {
  Team(int size, int64_t max_channels, const std::atomic<bool>* abort)
      : size(size), cmax(max_channels), barrier(size, abort), partial(2 * size * max_channels), counts(2 * size) {}
  int size;
  int64_t cmax;
  SpinBarrier barrier;
  std::vector<double> partial;  // [phase][member][channel]
  std::vector<int64_t> counts;  // [phase][member]
};

// One thread's view of its team plus its private buffers.
struct Member {
  Team* team = nullptr;
  int rank = 0;
  int phase = 0;
  Floats buf[4];
  std::vector<double> total, acc;
  std::vector<float> meanf, pooled;

  void reserve(size_t floats) {
    for (auto& b : buf)
      if (b.size() < floats) b.resize(floats);
  }

  // Sums every member's `local` (len doubles) and sample count over the team, in member order.
  int64_t reduce(int64_t len, int64_t count, const double* local) {
    double* mine = team->partial.data() + (phase * team->size + rank) * team->cmax;
    std::copy(local, local + len, mine);
    team->counts[phase * team->size + rank] = count;
    team->barrier.wait();
    total.assign(len, 0.0);
    int64_t n = 0;
    for (int r = 0; r < team->size; ++r) {
      const double* p = team->partial.data() + (phase * team->size + r) * team->cmax;
      for (int64_t c = 0; c < len; ++c) total[c] += p[c];
      n += team->counts[phase * team->size + r];
    }
    phase ^= 1;
    return n;
  }
};

// A buffer holding a raw conv output whose train-mode BN (+ activation, + residual) is still to
// be applied; the next layer applies it chunk by chunk, right before reading the chunk.
struct Pending {
  const Layer* layer = nullptr;
  const float* res = nullptr;
};

void apply_pending(const KernelTable& K, const Pending& p, float* buf, int64_t i0, int64_t cnt) {
  if (!p.layer) return;
  const Layer& L = *p.layer;
  const int64_t off = i0 * L.out_h * L.out_w * L.cout_p;
  K.bn_apply(buf + off, cnt * L.out_h * L.out_w, L.cout_p, L.bn_scale.data(), L.bn_shift.data(), L.act,
             p.res ? p.res + off : nullptr);
}

// One train-mode layer over this member's n images: per chunk, apply the input's pending BN, run
// the conv (raw output) and accumulate the output's channel statistics (the conv gathers them
// itself when it returns true: conv(i0, cnt, shift, sum, sumsq)); then reduce the
// statistics over the team into the layer's BN scale/shift and update its running statistics.
template <class Conv>
void train_layer(const KernelTable& K, Layer& L, int64_t n, float* in, const Pending& pin, float* out, Conv conv,
                 Member& m, float eps) {
  const int64_t Cp = L.cout_p, C = L.cout, hw = L.out_h * L.out_w;
  const BatchNorm& bn = *L.bn;
  // The supernet's running mean is a close guess of the batch mean: a shift against cancellation.
  m.meanf.assign(Cp, 0.0f);
  for (int64_t c = 0; c < C; ++c) m.meanf[c] = bn.running_mean.data[c];
  m.acc.assign(2 * Cp, 0.0);
  for (int64_t i0 = 0; i0 < n; i0 += kEvalChunk) {
    const int64_t cnt = std::min(kEvalChunk, n - i0);
    if (in) apply_pending(K, pin, in, i0, cnt);
    if (!conv(i0, cnt, m.meanf.data(), m.acc.data(), m.acc.data() + Cp))
      K.channel_stats(out + i0 * hw * Cp, cnt * hw, Cp, m.meanf.data(), m.acc.data(), m.acc.data() + Cp);
  }
  const int64_t total_n = m.reduce(2 * Cp, n * hw, m.acc.data());
  L.bn_scale.assign(Cp, 0.0f);
  L.bn_shift.assign(Cp, 0.0f);
  if (L.batches == 0) {
    L.run_mean.assign(C, 0.0);
    L.run_var.assign(C, 1.0);
  }
  L.batches += 1;
  const double f = 1.0 / static_cast<double>(L.batches), dn = static_cast<double>(total_n);
  for (int64_t c = 0; c < C; ++c) {
    const double d = m.total[c] / dn;
    const double mean = static_cast<double>(m.meanf[c]) + d;
    const double var = std::max(0.0, m.total[Cp + c] / dn - d * d);
    const double s = bn.weight.data[c] / std::sqrt(var + static_cast<double>(eps));
    L.bn_scale[c] = static_cast<float>(s);
    L.bn_shift[c] = static_cast<float>(bn.bias.data[c] - mean * s);
    L.run_mean[c] = (1.0 - f) * L.run_mean[c] + f * mean;
    L.run_var[c] = (1.0 - f) * L.run_var[c] + f * var * dn / (dn - 1.0);
  }
}

// Where a pass over a subnet's layers starts and stops. A cut `j` >= 0 is the materialized
// (post-BN) activation after the stem and the first j blocks, NHWC with padded channels.
struct Span {
  int64_t entry = -1;  // -1: from NCHW images through the stem; j: from the activation at cut j
  int64_t exit = -1;   // -1: through the head (logits); j: stop at cut j and copy it out
};

int64_t num_blocks(const Program& prog) { return static_cast<int64_t>(prog.layers.size() - 2) / 3; }

// Floats per image of the activation at cut j (the output of layer 3j: the stem, or block j-1's project).
int64_t cut_floats(const Program& prog, int64_t j) {
  const Layer& L = prog.layers[static_cast<size_t>(3 * j)];
  return L.out_h * L.out_w * L.cout_p;
}

// Floats per image of a span's input.
int64_t entry_floats(const NetSpec& spec, const Program& prog, int64_t entry) {
  const Layer& stem = prog.layers[0];
  return entry < 0 ? spec.in_channels * stem.in_h * stem.in_w : cut_floats(prog, entry);
}

// First layer a span runs: everything before it is the prefix another pass already computed.
size_t first_layer(const Span& span) { return span.entry < 0 ? 0 : static_cast<size_t>(1 + 3 * span.entry); }

// Last layer (exclusive) a span runs.
size_t end_layer(const Program& prog, const Span& span) {
  return span.exit < 0 ? prog.layers.size() : static_cast<size_t>(1 + 3 * span.exit);
}

// The blocks [first, last) a span runs.
std::pair<int64_t, int64_t> span_blocks(const Program& prog, const Span& span) {
  return {std::max<int64_t>(span.entry, 0), span.exit < 0 ? num_blocks(prog) : span.exit};
}

// Floats per image of the largest activation the span's layers produce (buffer size).
int64_t span_max_act(const Program& prog, const Span& span) {
  int64_t most = 0;
  for (size_t l = first_layer(span); l < end_layer(prog, span); ++l) {
    const Layer& L = prog.layers[l];
    most = std::max(most, L.out_h * L.out_w * L.cout_p);
  }
  return most;
}

// Train-mode pass of one calibration batch share (n inputs, see Span) over the span's layers:
// updates their running statistics. With span.exit >= 0 the activation at that cut (post-BN) is
// written to `cut_out`. Team members must call it together (statistics are reduced over the team).
void train_forward(const KernelTable& K, const NetSpec& spec, Program& prog, const Span& span, const float* input,
                   int64_t n, Member& m, float* cut_out) {
  float* spare = m.buf[0].data();
  const float* a = input;  // input of the next layer; external (read-only) until a layer writes
  float* a_buf = nullptr;  // a, when it is one of this member's buffers
  float* b = m.buf[1].data();
  float* c = m.buf[2].data();
  float* d = m.buf[3].data();
  const float eps = spec.bn_eps;
  const Act none = Act::kNone;
  auto& layers = prog.layers;
  Pending pa;
  if (span.entry < 0) {
    Layer& L = layers[0];
    const int64_t in_img = L.cin * L.in_h * L.in_w, out_img = L.out_h * L.out_w * L.cout_p;
    train_layer(
        K, L, n, nullptr, pa, spare,
        [&](int64_t i0, int64_t cnt, const float*, double*, double*) {
          K.stem(input + i0 * in_img, cnt, L.cin, L.in_h, L.in_w, L.w.data(), L.cout_p, L.k, L.stride, nullptr, none,
                 spare + i0 * out_img, L.out_h, L.out_w);
          return false;
        },
        m, eps);
    pa = {&L, nullptr};
    a = a_buf = spare;
    spare = nullptr;
  }
  auto pointwise_layer = [&](Layer& L, const float* in, const Pending& pin, float* out) {
    const int64_t hw = L.out_h * L.out_w;
    // Only a buffer this member owns carries a pending BN (an external input is materialized).
    float* in_mut = const_cast<float*>(in);
    train_layer(
        K, L, n, pin.layer ? in_mut : nullptr, pin, out,
        [&](int64_t i0, int64_t cnt, const float* shift, double* sum, double* sumsq) {
          K.pointwise(in + i0 * hw * L.cin_p, cnt * hw, L.cin, L.cin_p, L.w.data(), L.cout_p, nullptr, none, nullptr,
                      out + i0 * hw * L.cout_p, shift, sum, sumsq);
          return true;
        },
        m, eps);
  };
  const auto [first_block, last_block] = span_blocks(prog, span);
  for (int64_t i = first_block; i < last_block; ++i) {
    Layer& E = layers[static_cast<size_t>(1 + 3 * i)];
    Layer& D = layers[static_cast<size_t>(2 + 3 * i)];
    Layer& Pj = layers[static_cast<size_t>(3 + 3 * i)];
    pointwise_layer(E, a, pa, b);
    const int64_t in_img = D.in_h * D.in_w * D.cout_p, out_img = D.out_h * D.out_w * D.cout_p;
    train_layer(
        K, D, n, b, Pending{&E, nullptr}, c,
        [&](int64_t i0, int64_t cnt, const float*, double*, double*) {
          K.depthwise(b + i0 * in_img, cnt, D.in_h, D.in_w, D.cout_p, D.w.data(), D.k, D.stride, nullptr, none,
                      c + i0 * out_img, D.out_h, D.out_w);
          return false;
        },
        m, eps);
    pointwise_layer(Pj, c, Pending{&D, nullptr}, d);
    // d holds the raw block output; its BN adds the block input (a) as the residual. The block
    // input stays intact until the next block's expand layer has applied that BN, so it becomes
    // the next block's project output buffer (an external input is never written: the spare is).
    pa = {&Pj, Pj.residual ? a : nullptr};
    float* next_d = a_buf ? a_buf : spare;
    a = a_buf = d;
    d = next_d;
  }
  if (span.exit < 0) {
    pointwise_layer(layers.back(), a, pa, b);
    return;
  }
  const int64_t floats = cut_floats(prog, span.exit);
  apply_pending(K, pa, a_buf, 0, n);
  std::memcpy(cut_out, a_buf, static_cast<size_t>(n * floats) * sizeof(float));
}

// Inference of n inputs (see Span) with the packed, folded weights: logits into `out`
// (n x classes), or with span.exit >= 0 the activation at that cut.
void forward(const KernelTable& K, const NetSpec& spec, Program& prog, const Span& span, const float* input, int64_t n,
             Member& m, float* out) {
  float* spare = m.buf[0].data();
  const float* a = input;
  float* a_buf = nullptr;
  float* b = m.buf[1].data();
  float* c = m.buf[2].data();
  auto& layers = prog.layers;
  if (span.entry < 0) {
    Layer& L = layers[0];
    K.stem(input, n, L.cin, L.in_h, L.in_w, L.w.data(), L.cout_p, L.k, L.stride, L.bias.data(), L.act, spare,
           L.out_h, L.out_w);
    a = a_buf = spare;
    spare = nullptr;
  }
  const auto [first_block, last_block] = span_blocks(prog, span);
  for (int64_t i = first_block; i < last_block; ++i) {
    Layer& E = layers[static_cast<size_t>(1 + 3 * i)];
    Layer& D = layers[static_cast<size_t>(2 + 3 * i)];
    Layer& Pj = layers[static_cast<size_t>(3 + 3 * i)];
    K.pointwise(a, n * E.out_h * E.out_w, E.cin, E.cin_p, E.w.data(), E.cout_p, E.bias.data(), E.act, nullptr, b,
                nullptr, nullptr, nullptr);
    K.depthwise(b, n, D.in_h, D.in_w, D.cout_p, D.w.data(), D.k, D.stride, D.bias.data(), D.act, c, D.out_h, D.out_w);
    K.pointwise(c, n * D.out_h * D.out_w, Pj.cin, Pj.cin_p, Pj.w.data(), Pj.cout_p, Pj.bias.data(), Act::kNone,
                Pj.residual ? a : nullptr, b, nullptr, nullptr, nullptr);
    float* next_b = a_buf ? a_buf : spare;
    a = a_buf = b;
    b = next_b;
  }
  if (span.exit >= 0) {
    std::memcpy(out, a, static_cast<size_t>(n * cut_floats(prog, span.exit)) * sizeof(float));
    return;
  }
  Layer& H = layers.back();
  const int64_t hw = H.out_h * H.out_w;
  K.pointwise(a, n * hw, H.cin, H.cin_p, H.w.data(), H.cout_p, H.bias.data(), H.act, nullptr, b, nullptr, nullptr,
              nullptr);
  const int64_t ch = spec.head_out, cp = H.cout_p, classes = spec.num_classes;
  const float* cw = spec.classifier_w.data.data();
  const float* cb = spec.classifier_b.data.data();
  m.pooled.assign(ch, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    std::fill(m.pooled.begin(), m.pooled.end(), 0.0f);
    const float* rows = b + i * hw * cp;
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t k = 0; k < ch; ++k) m.pooled[k] += rows[p * cp + k];
    const float inv = 1.0f / static_cast<float>(hw);
    for (int64_t k = 0; k < ch; ++k) m.pooled[k] *= inv;
    for (int64_t j = 0; j < classes; ++j) {
      float acc = 0.0f;
      const float* wj = cw + j * ch;
      for (int64_t k = 0; k < ch; ++k) acc += m.pooled[k] * wj[k];
      out[i * classes + j] = acc + cb[j];
    }
  }
}

// Builds a subnet's program, recalibrates the BN statistics of the span's layers when calibration
// inputs are given (all team members together, batch by batch) and packs their folded weights.
// With span.exit >= 0 and `calibration_cut` non-null, the calibration activations at that cut are
// stored there (num_calibration x cut floats, in input order).
Program prepare_program(const KernelTable& K, const NetSpec& spec, const SubnetPlan& plan, const Span& span,
                        const float* calibration, int64_t num_calibration, int64_t calibration_batch, Member& m,
                        float* calibration_cut) {
  Program prog = build_program(spec, plan);
  const int size = m.team->size, rank = m.rank;
  const int64_t in_img = entry_floats(spec, prog, span.entry);
  const int64_t cut_img = span.exit >= 0 ? cut_floats(prog, span.exit) : 0;
  const bool recal = calibration != nullptr && num_calibration > 0;
  const size_t begin = first_layer(span), end = end_layer(prog, span);
  int64_t per_member = kEvalChunk;
  if (recal) per_member = std::max(per_member, (calibration_batch + size - 1) / size);
  m.reserve(static_cast<size_t>(per_member * span_max_act(prog, span)));
  if (recal) {
    for (size_t l = begin; l < end; ++l) pack(prog.layers[l], nullptr, nullptr);
    for (int64_t start = 0; start < num_calibration; start += calibration_batch) {
      const int64_t bsz = std::min(calibration_batch, num_calibration - start);
      const int64_t share = (bsz + size - 1) / size;
      const int64_t b0 = std::min(bsz, rank * share), b1 = std::min(bsz, b0 + share);
      train_forward(K, spec, prog, span, calibration + (start + b0) * in_img, b1 - b0, m,
                    calibration_cut ? calibration_cut + (start + b0) * cut_img : nullptr);
    }
  }
  for (size_t l = begin; l < end; ++l) pack_folded(prog.layers[l], recal, spec.bn_eps);
  return prog;
}

// Inference of the chunks rank, rank + stride, ... of n inputs. Through the head: returns the
// top-1 hits (logits into `out` when non-null); with span.exit >= 0: the cut activations into `out`.
int64_t infer(const KernelTable& K, const NetSpec& spec, Program& prog, const Span& span, const float* inputs,
              int64_t n, const int64_t* labels, float* out, int rank, int stride, Member& m) {
  const int64_t classes = spec.num_classes, in_img = entry_floats(spec, prog, span.entry);
  const int64_t out_img = span.exit >= 0 ? cut_floats(prog, span.exit) : classes;
  m.reserve(static_cast<size_t>(kEvalChunk * span_max_act(prog, span)));
  std::vector<float> local(kEvalChunk * classes);
  int64_t hits = 0;
  const int64_t chunks = (n + kEvalChunk - 1) / kEvalChunk;
  for (int64_t ci = rank; ci < chunks; ci += stride) {
    const int64_t i0 = ci * kEvalChunk, cnt = std::min(kEvalChunk, n - i0);
    float* dst = out ? out + i0 * out_img : local.data();
    forward(K, spec, prog, span, inputs + i0 * in_img, cnt, m, dst);
    if (labels && span.exit < 0)
      for (int64_t i = 0; i < cnt; ++i) {
        const float* row = dst + i * classes;
        const int64_t best = std::max_element(row, row + classes) - row;
        hits += best == labels[i0 + i];
      }
  }
  return hits;
}

// The activations a group of requests shares: the post-BN activation at cut `depth` of their common
// prefix (stem + `depth` identical blocks, same resolution, same inputs), for the calibration
// images (train-mode BN, batch by batch) and the scored images (folded BN).
struct PrefixNode {
  SubnetPlan plan;        // resolution and the shared blocks
  int parent = -1;        // node at depth - 1, or -1: computed from the images
  int64_t floats = 0;     // per image at the cut
  int entries = 0;        // requests that start from this node
  int children = 0;       // nodes computed from this one, still to do
  const EvalRequest* source = nullptr;  // a request of the group (its inputs)
  Floats calibration, scored;
};

// Multiply-accumulates per image of a program's layers from `begin` on (a scheduling estimate).
double subnet_cost(const Program& prog, size_t begin) {
  double macs = 0.0;
  for (size_t l = begin; l < prog.layers.size(); ++l) {
    const Layer& L = prog.layers[l];
    const double per_pixel = L.kind == Kind::kDepthwise ? static_cast<double>(L.k * L.k * L.cout)
                                                          : static_cast<double>(L.k * L.k * L.cin * L.cout);
    macs += per_pixel * static_cast<double>(L.out_h * L.out_w);
  }
  return macs;
}

// Where each request starts: an index into the nodes, or -1 (from the images).
struct SharingPlan {
  std::vector<PrefixNode> nodes;  // parents before children
  std::vector<int> entry;         // per request
};

bool same_block(const BlockChoice& x, const BlockChoice& y) {
  return x.slot == y.slot && x.mid == y.mid && x.out == y.out && x.kernel == y.kernel;
}

// Requests with the same inputs and resolution whose leading blocks coincide share those blocks'
// activations: every prefix used by at least two requests becomes a node, computed once. Nodes
// are admitted shallowest first while their activations fit in `memory_limit` bytes.
SharingPlan plan_sharing(const NetSpec& spec, const std::vector<EvalRequest>& requests, int64_t memory_limit) {
  SharingPlan sp;
  sp.entry.assign(requests.size(), -1);
  const size_t n = requests.size();
  std::vector<int> group(n, -1);
  for (size_t i = 0; i < n; ++i) {
    const EvalRequest& r = requests[i];
    for (size_t j = 0; j < i && group[i] < 0; ++j) {
      const EvalRequest& q = requests[j];
      if (q.plan.resolution == r.plan.resolution && q.images == r.images && q.num_images == r.num_images &&
          q.calibration == r.calibration && q.num_calibration == r.num_calibration &&
          q.calibration_batch == r.calibration_batch)
        group[i] = group[j];
    }
    if (group[i] < 0) group[i] = static_cast<int>(i);
  }
  // Depth by depth: requests of one group whose admitted prefix and next block agree form a candidate node.
  std::vector<int> current(n, -1);  // each request's deepest admitted node so far
  int64_t used = 0;
  bool any = true;
  for (int64_t depth = 0; any; ++depth) {
    any = false;
    std::vector<std::vector<size_t>> members;  // requests per candidate node at this depth
    std::vector<int> candidate(n, -1);
    for (size_t i = 0; i < n; ++i) {
      const EvalRequest& r = requests[i];
      if (depth > static_cast<int64_t>(r.plan.blocks.size())) continue;
      if (depth > 0 && current[i] < 0) continue;  // its shallower prefix is not shared
      if (depth > 0 && sp.nodes[static_cast<size_t>(current[i])].plan.blocks.size() != static_cast<size_t>(depth - 1))
        continue;
      for (size_t c = 0; c < members.size(); ++c) {
        const EvalRequest& q = requests[members[c][0]];
        if (group[members[c][0]] != group[i] || current[members[c][0]] != current[i]) continue;
        if (depth > 0 && !same_block(q.plan.blocks[depth - 1], r.plan.blocks[depth - 1])) continue;
        candidate[i] = static_cast<int>(c);
        break;
      }
      if (candidate[i] < 0) {
        candidate[i] = static_cast<int>(members.size());
        members.push_back({});
      }
      members[static_cast<size_t>(candidate[i])].push_back(i);
    }
    for (const auto& mem : members) {
      if (mem.size() < 2) continue;
      const EvalRequest& r = requests[mem[0]];
      PrefixNode node;
      node.plan.resolution = r.plan.resolution;
      node.plan.blocks.assign(r.plan.blocks.begin(), r.plan.blocks.begin() + depth);
      node.parent = depth > 0 ? current[mem[0]] : -1;
      const Program prog = build_program(spec, node.plan);
      node.floats = cut_floats(prog, depth);
      const int64_t bytes = (r.num_images + r.num_calibration) * node.floats * static_cast<int64_t>(sizeof(float));
      if (used + bytes > memory_limit) continue;
      used += bytes;
      node.source = &r;
      if (node.parent >= 0) sp.nodes[static_cast<size_t>(node.parent)].children += 1;
      const int index = static_cast<int>(sp.nodes.size());
      sp.nodes.push_back(std::move(node));
      for (size_t i : mem) current[i] = index;
      any = true;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    sp.entry[i] = current[i];
    if (current[i] >= 0) sp.nodes[static_cast<size_t>(current[i])].entries += 1;
  }
  return sp;
}

// Computes a node from its parent (or the images), by all members of a team together.
void compute_node(const KernelTable& K, const NetSpec& spec, PrefixNode& node, const PrefixNode* parent,
                  Member& m) {
  const EvalRequest& r = *node.source;
  const int64_t depth = static_cast<int64_t>(node.plan.blocks.size());
  const Span span{parent ? depth - 1 : -1, depth};
  const bool recal = r.calibration != nullptr && r.num_calibration > 0;
  if (m.rank == 0) {
    node.calibration.resize(static_cast<size_t>(recal ? r.num_calibration * node.floats : 0));
    node.scored.resize(static_cast<size_t>(r.num_images * node.floats));
  }
  m.team->barrier.wait();
  const float* calibration = !recal ? nullptr : parent ? parent->calibration.data() : r.calibration;
  Program prog = prepare_program(K, spec, node.plan, span, calibration, r.num_calibration, r.calibration_batch, m,
                                 recal ? node.calibration.data() : nullptr);
  infer(K, spec, prog, span, parent ? parent->scored.data() : r.images, r.num_images, nullptr, node.scored.data(),
        m.rank, m.team->size, m);
  m.team->barrier.wait();
}

// One request, by all members of a team together, from its entry node (or the images).
void run_request(const KernelTable& K, const NetSpec& spec, EvalRequest& req, const PrefixNode* entry, Member& m,
                 std::atomic<int64_t>& correct) {
  const Span span{entry ? static_cast<int64_t>(entry->plan.blocks.size()) : -1, -1};
  const float* calibration = !req.calibration ? nullptr : entry ? entry->calibration.data() : req.calibration;
  Program prog = prepare_program(K, spec, req.plan, span, calibration, req.num_calibration, req.calibration_batch, m,
                                 nullptr);
  correct.fetch_add(infer(K, spec, prog, span, entry ? entry->scored.data() : req.images, req.num_images, req.labels,
                          req.logits, m.rank, m.team->size, m));
}

// Throws std::invalid_argument when the calibration batches of `plan` would hold a single value
// per channel somewhere (torch's train-mode BN refuses that too).
void check_calibration(const NetSpec& spec, const SubnetPlan& plan, int64_t num_calibration, int64_t batch,
                       const std::string& where) {
  if (batch < 1) throw std::invalid_argument(where + "calibration batch size must be >= 1");
  const int64_t last = num_calibration % batch;
  const int64_t smallest = last ? last : batch;
  int64_t hw = out_size(plan.resolution, spec.stem_stride);
  for (const BlockChoice& b : plan.blocks) hw = out_size(hw, spec.slots[b.slot].stride);
  if (smallest * hw * hw < 2)
    throw std::invalid_argument(where +
                                "BN recalibration needs more than one value per channel in every batch "
                                "(use more calibration images per batch)");
}

}  // namespace

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const IsaEntry& entry : cpu_isas()) names.emplace_back(entry.name);
  return names;
}

std::string active_isa() { return active_isa_entry().name; }

void set_active_isa(const std::string& isa) { g_active_isa.store(&find_isa(isa, ""), std::memory_order_release); }

Act parse_activation(const std::string& name) {
  if (name == "relu") return Act::kReLU;
  if (name == "relu6") return Act::kReLU6;
  if (name == "hswish") return Act::kHSwish;
  throw std::invalid_argument("unknown activation '" + name + "' (expected relu, relu6 or hswish)");
}

SubnetEvaluator::SubnetEvaluator(NetSpec spec) : spec_(std::move(spec)) {
  const NetSpec& s = spec_;
  if (s.in_channels < 1 || s.num_classes < 1 || s.stem_out < 1 || s.head_out < 1 || s.head_in < 1)
    throw std::invalid_argument("supernet spec: channel counts must be positive");
  if (s.stem_kernel < 1 || s.stem_kernel % 2 == 0 || s.stem_stride < 1)
    throw std::invalid_argument("supernet spec: the stem kernel must be odd and its stride positive");
  if (s.slots.empty()) throw std::invalid_argument("supernet spec: no block slots");
  if (!(s.bn_eps > 0.0f)) throw std::invalid_argument("supernet spec: bn_eps must be positive");
  check_shape(s.stem_w, {s.stem_out, s.in_channels, s.stem_kernel, s.stem_kernel}, "stem_conv.weight");
  check_bn(s.stem_bn, s.stem_out, "stem_bn");
  for (size_t i = 0; i < s.slots.size(); ++i) {
    const SlotSpec& b = s.slots[i];
    const std::string p = "blocks." + std::to_string(i) + ".";
    if (b.max_in < 1 || b.max_mid < 1 || b.max_out < 1 || b.max_kernel < 1 || b.max_kernel % 2 == 0 ||
        (b.stride != 1 && b.stride != 2))
      throw std::invalid_argument("supernet spec: block slot " + std::to_string(i) + " has a bad geometry");
    if (b.residual && (b.stride != 1 || b.max_in != b.max_out))
      throw std::invalid_argument("supernet spec: residual block slot " + std::to_string(i) +
                                  " needs stride 1 and equal input/output widths");
    check_shape(b.expand_w, {b.max_mid, b.max_in, 1, 1}, p + "expand_conv.weight");
    check_bn(b.expand_bn, b.max_mid, p + "expand_bn");
    check_shape(b.depthwise_w, {b.max_mid, 1, b.max_kernel, b.max_kernel}, p + "depthwise_conv.weight");
    check_bn(b.depthwise_bn, b.max_mid, p + "depthwise_bn");
    check_shape(b.project_w, {b.max_out, b.max_mid, 1, 1}, p + "project_conv.weight");
    check_bn(b.project_bn, b.max_out, p + "project_bn");
  }
  check_shape(s.head_w, {s.head_out, s.head_in, 1, 1}, "head_conv.weight");
  check_bn(s.head_bn, s.head_out, "head_bn");
  check_shape(s.classifier_w, {s.num_classes, s.head_out}, "classifier.weight");
  check_shape(s.classifier_b, {s.num_classes}, "classifier.bias");
}

void SubnetEvaluator::validate(const SubnetPlan& plan) const {
  const NetSpec& s = spec_;
  if (plan.resolution < 1 || plan.resolution > 4096)
    throw std::invalid_argument("subnet: resolution " + std::to_string(plan.resolution) + " is out of range");
  int64_t in = s.stem_out, prev_slot = -1;
  for (size_t i = 0; i < plan.blocks.size(); ++i) {
    const BlockChoice& b = plan.blocks[i];
    const std::string where = "subnet block " + std::to_string(i) + " (slot " + std::to_string(b.slot) + ")";
    if (b.slot < 0 || b.slot >= static_cast<int64_t>(s.slots.size()))
      throw std::invalid_argument(where + ": slot index out of range [0, " + std::to_string(s.slots.size()) + ")");
    if (b.slot <= prev_slot) throw std::invalid_argument(where + ": slots must be strictly increasing");
    const SlotSpec& slot = s.slots[b.slot];
    if (in > slot.max_in)
      throw std::invalid_argument(where + ": input width " + std::to_string(in) + " exceeds the slot's " +
                                  std::to_string(slot.max_in));
    if (b.mid < 1 || b.mid > slot.max_mid)
      throw std::invalid_argument(where + ": expanded width " + std::to_string(b.mid) + " is not in [1, " +
                                  std::to_string(slot.max_mid) + "]");
    if (b.out < 1 || b.out > slot.max_out)
      throw std::invalid_argument(where + ": output width " + std::to_string(b.out) + " is not in [1, " +
                                  std::to_string(slot.max_out) + "]");
    if (b.kernel < 1 || b.kernel % 2 == 0 || b.kernel > slot.max_kernel)
      throw std::invalid_argument(where + ": kernel size " + std::to_string(b.kernel) +
                                  " must be odd and at most " + std::to_string(slot.max_kernel));
    if (slot.residual && b.out != in)
      throw std::invalid_argument(where + ": a residual block needs equal input and output widths, got " +
                                  std::to_string(in) + " and " + std::to_string(b.out));
    in = b.out;
    prev_slot = b.slot;
  }
  if (in > s.head_in)
    throw std::invalid_argument("subnet: head input width " + std::to_string(in) + " exceeds " +
                                std::to_string(s.head_in));
}

void SubnetEvaluator::run(std::vector<EvalRequest>& requests, int num_threads, int64_t share_memory_bytes) const {
  if (num_threads < 1) throw std::invalid_argument("num_threads must be >= 1");
  if (share_memory_bytes < 0) throw std::invalid_argument("share_memory_bytes must be >= 0");
  int64_t max_channels = 2 * pad8(std::max(spec_.stem_out, spec_.head_out));
  for (size_t i = 0; i < requests.size(); ++i) {
    const EvalRequest& r = requests[i];
    const std::string where = "request " + std::to_string(i) + ": ";
    validate(r.plan);
    if (r.num_images < 0 || (r.num_images > 0 && r.images == nullptr))
      throw std::invalid_argument(where + "no images");
    if (r.calibration != nullptr && r.num_calibration > 0)
      check_calibration(spec_, r.plan, r.num_calibration, r.calibration_batch, where);
    for (const BlockChoice& b : r.plan.blocks) max_channels = std::max(max_channels, 2 * pad8(std::max(b.mid, b.out)));
  }
  if (requests.empty()) return;
  const KernelTable& K = kernels();
  const int threads = static_cast<int>(std::min<int64_t>(num_threads, 256));
  SharingPlan sharing;
  if (share_memory_bytes > 0) sharing = plan_sharing(spec_, requests, share_memory_bytes);
  else sharing.entry.assign(requests.size(), -1);
  std::vector<PrefixNode>& nodes = sharing.nodes;
  std::atomic<bool> abort{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  // One member per thread for the whole run: its activation buffers serve every phase.
  std::vector<Member> members(static_cast<size_t>(threads));
  // Runs body(member) on `threads` threads split into teams of team_size; the first error wins.
  auto parallel = [&](int team_size, const std::function<void(Member&)>& body) {
    std::vector<std::unique_ptr<Team>> teams;
    for (int t = 0; t < threads / team_size; ++t) teams.emplace_back(new Team(team_size, max_channels, &abort));
    auto worker = [&](int tid) {
      Member& m = members[static_cast<size_t>(tid)];
      m.team = teams[static_cast<size_t>(tid / team_size)].get();
      m.rank = tid % team_size;
      m.phase = 0;
      try {
        body(m);
      } catch (const Aborted&) {
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        abort.store(true);
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
    worker(0);
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
  };
  auto release = [](PrefixNode& node) {
    Floats().swap(node.calibration);
    Floats().swap(node.scored);
  };
  // Shared prefixes first, parents before children, all threads on each node.
  if (!nodes.empty())
    parallel(threads, [&](Member& m) {
      for (size_t i = 0; i < nodes.size() && !abort.load(); ++i) {
        PrefixNode& node = nodes[i];
        PrefixNode* parent = node.parent >= 0 ? &nodes[static_cast<size_t>(node.parent)] : nullptr;
        compute_node(K, spec_, node, parent, m);
        if (m.rank == 0 && parent && --parent->children == 0 && parent->entries == 0) release(*parent);
      }
    });
  std::vector<std::atomic<int>> remaining(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) remaining[i].store(nodes[i].entries);
  std::vector<std::atomic<int64_t>> correct(requests.size());
  for (auto& c : correct) c.store(0);
  auto entry_of = [&](size_t i) -> const PrefixNode* {
    return sharing.entry[i] >= 0 ? &nodes[static_cast<size_t>(sharing.entry[i])] : nullptr;
  };
  const bool solo = static_cast<int64_t>(requests.size()) >= threads;  // one request per thread
  // Costliest first, so that no thread is left with a large subnet at the end while others idle.
  std::vector<size_t> order(requests.size());
  std::vector<double> cost(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    order[i] = i;
    const PrefixNode* entry = entry_of(i);
    const Span span{entry ? static_cast<int64_t>(entry->plan.blocks.size()) : -1, -1};
    cost[i] = subnet_cost(build_program(spec_, requests[i].plan), first_layer(span));
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return cost[x] > cost[y]; });
  std::atomic<size_t> next{0};
  parallel(solo ? 1 : threads, [&](Member& m) {
    if (solo) {
      for (size_t k = next.fetch_add(1); k < requests.size() && !abort.load(); k = next.fetch_add(1)) {
        const size_t i = order[k];
        run_request(K, spec_, requests[i], entry_of(i), m, correct[i]);
        const int e = sharing.entry[i];
        if (e >= 0 && remaining[static_cast<size_t>(e)].fetch_sub(1) == 1) release(nodes[static_cast<size_t>(e)]);
      }
    } else {
      for (size_t i = 0; i < requests.size() && !abort.load(); ++i)
        run_request(K, spec_, requests[i], entry_of(i), m, correct[i]);
    }
  });
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].correct = correct[i].load();
    const PrefixNode* entry = entry_of(i);
    requests[i].shared_depth = entry ? static_cast<int64_t>(entry->plan.blocks.size()) : -1;
  }
}

struct PreparedSubnet::Impl {
  const NetSpec* spec;
  Program prog;
};

PreparedSubnet::PreparedSubnet() = default;
PreparedSubnet::~PreparedSubnet() = default;
PreparedSubnet::PreparedSubnet(PreparedSubnet&&) noexcept = default;
PreparedSubnet& PreparedSubnet::operator=(PreparedSubnet&&) noexcept = default;

int64_t PreparedSubnet::resolution() const { return impl_->prog.layers[0].in_h; }
int64_t PreparedSubnet::in_channels() const { return impl_->spec->in_channels; }
int64_t PreparedSubnet::num_classes() const { return impl_->spec->num_classes; }

void PreparedSubnet::logits(const float* images, int64_t n, float* out, int num_threads) const {
  if (num_threads < 1) throw std::invalid_argument("num_threads must be >= 1");
  const KernelTable& K = kernels();
  const int64_t chunks = (n + kEvalChunk - 1) / kEvalChunk;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({num_threads, chunks, 256})));
  // Inference only reads the program, so the threads share it.
  Program& prog = const_cast<Program&>(impl_->prog);
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int rank) {
    try {
      Member m;
      infer(K, *impl_->spec, prog, Span{}, images, n, nullptr, out, rank, threads, m);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

PreparedSubnet SubnetEvaluator::prepare(const SubnetPlan& plan, const float* calibration, int64_t num_calibration,
                                        int64_t calibration_batch) const {
  validate(plan);
  if (calibration != nullptr && num_calibration > 0)
    check_calibration(spec_, plan, num_calibration, calibration_batch, "");
  std::atomic<bool> abort{false};
  int64_t max_channels = 2 * pad8(std::max(spec_.stem_out, spec_.head_out));
  for (const BlockChoice& b : plan.blocks) max_channels = std::max(max_channels, 2 * pad8(std::max(b.mid, b.out)));
  Team team(1, max_channels, &abort);
  Member m;
  m.team = &team;
  PreparedSubnet prepared;
  prepared.impl_.reset(new PreparedSubnet::Impl{
      &spec_, prepare_program(kernels(), spec_, plan, Span{}, calibration, num_calibration, calibration_batch, m, nullptr)});
  return prepared;
}

}  // namespace eval
}  // namespace codesign
