#include "evaluator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
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
typedef int32_t V8I __attribute__((vector_size(32)));

// The kernels of one instruction set (see evaluator_kernels.inc).
struct KernelTable {
  void (*pointwise)(const float*, int64_t, int64_t, int64_t, const float*, int64_t, const float*, Act, const float*,
                    float*);
  void (*depthwise)(const float*, int64_t, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, Act,
                    float*, int64_t, int64_t);
  void (*stem)(const float*, int64_t, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, const float*,
               Act, float*, int64_t, int64_t);
  void (*bn_apply)(float*, int64_t, int64_t, const float*, const float*, Act, const float*);
  void (*channel_stats)(const float*, int64_t, int64_t, const float*, double*, double*);
};

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
#endif

const KernelTable& kernels() {
#ifdef CODESIGN_HAVE_AVX2_PATH
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return isa_avx2::kTable;
#endif
  return isa_base::kTable;
}

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
  std::vector<float> w, bias;                 // packed weights (BN folded in for inference)
  std::vector<double> run_mean, run_var;      // recalibrated statistics
  std::vector<float> bn_scale, bn_shift;      // train-mode BN of the current batch (Cp long)
  int64_t batches = 0;
};

// A subnet resolved against the supernet: its layers and buffer sizes.
struct Program {
  std::vector<Layer> layers;  // stem, (expand, depthwise, project) per block, head
  int64_t max_act = 0;        // floats per image of the largest activation
  int64_t head_hw = 0;
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
    prog.max_act = std::max(prog.max_act, L.out_h * L.out_w * L.cout_p);
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
  prog.head_hw = h * h;
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
  std::vector<float> buf[4];
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
// the conv (raw output) and accumulate the output's channel statistics; then reduce the
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
    conv(i0, cnt);
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

// Train-mode pass of one calibration batch share (n NCHW images): updates every layer's running
// statistics. Team members must call it together (the statistics are reduced over the team).
void train_forward(const KernelTable& K, const NetSpec& spec, Program& prog, const float* images, int64_t n,
                   Member& m) {
  float* a = m.buf[0].data();
  float* b = m.buf[1].data();
  float* c = m.buf[2].data();
  float* d = m.buf[3].data();
  const float eps = spec.bn_eps;
  const Act none = Act::kNone;
  auto& layers = prog.layers;
  Pending pa;
  {
    Layer& L = layers[0];
    const int64_t in_img = L.cin * L.in_h * L.in_w, out_img = L.out_h * L.out_w * L.cout_p;
    train_layer(
        K, L, n, nullptr, pa, a,
        [&](int64_t i0, int64_t cnt) {
          K.stem(images + i0 * in_img, cnt, L.cin, L.in_h, L.in_w, L.w.data(), L.cout_p, L.k, L.stride, nullptr, none,
                 a + i0 * out_img, L.out_h, L.out_w);
        },
        m, eps);
    pa = {&L, nullptr};
  }
  auto pointwise_layer = [&](Layer& L, float* in, const Pending& pin, float* out) {
    const int64_t hw = L.out_h * L.out_w;
    train_layer(
        K, L, n, in, pin, out,
        [&](int64_t i0, int64_t cnt) {
          K.pointwise(in + i0 * hw * L.cin_p, cnt * hw, L.cin, L.cin_p, L.w.data(), L.cout_p, nullptr, none, nullptr,
                      out + i0 * hw * L.cout_p);
        },
        m, eps);
  };
  const size_t num_blocks = (layers.size() - 2) / 3;
  for (size_t i = 0; i < num_blocks; ++i) {
    Layer& E = layers[1 + 3 * i];
    Layer& D = layers[2 + 3 * i];
    Layer& Pj = layers[3 + 3 * i];
    pointwise_layer(E, a, pa, b);
    const int64_t in_img = D.in_h * D.in_w * D.cout_p, out_img = D.out_h * D.out_w * D.cout_p;
    train_layer(
        K, D, n, b, Pending{&E, nullptr}, c,
        [&](int64_t i0, int64_t cnt) {
          K.depthwise(b + i0 * in_img, cnt, D.in_h, D.in_w, D.cout_p, D.w.data(), D.k, D.stride, nullptr, none,
                      c + i0 * out_img, D.out_h, D.out_w);
        },
        m, eps);
    pointwise_layer(Pj, c, Pending{&D, nullptr}, d);
    // d holds the raw block output; its BN adds the block input (a) as the residual.
    pa = {&Pj, Pj.residual ? a : nullptr};
    std::swap(a, d);
  }
  pointwise_layer(layers.back(), a, pa, b);
}

// Inference of n NCHW images with the packed, folded weights: logits into `logits` (n x classes).
void forward(const KernelTable& K, const NetSpec& spec, Program& prog, const float* images, int64_t n, Member& m,
             float* logits) {
  float* a = m.buf[0].data();
  float* b = m.buf[1].data();
  float* c = m.buf[2].data();
  auto& layers = prog.layers;
  {
    Layer& L = layers[0];
    K.stem(images, n, L.cin, L.in_h, L.in_w, L.w.data(), L.cout_p, L.k, L.stride, L.bias.data(), L.act, a, L.out_h,
           L.out_w);
  }
  const size_t num_blocks = (layers.size() - 2) / 3;
  for (size_t i = 0; i < num_blocks; ++i) {
    Layer& E = layers[1 + 3 * i];
    Layer& D = layers[2 + 3 * i];
    Layer& Pj = layers[3 + 3 * i];
    K.pointwise(a, n * E.out_h * E.out_w, E.cin, E.cin_p, E.w.data(), E.cout_p, E.bias.data(), E.act, nullptr, b);
    K.depthwise(b, n, D.in_h, D.in_w, D.cout_p, D.w.data(), D.k, D.stride, D.bias.data(), D.act, c, D.out_h, D.out_w);
    K.pointwise(c, n * D.out_h * D.out_w, Pj.cin, Pj.cin_p, Pj.w.data(), Pj.cout_p, Pj.bias.data(), Act::kNone,
                Pj.residual ? a : nullptr, b);
    std::swap(a, b);
  }
  Layer& H = layers.back();
  const int64_t hw = H.out_h * H.out_w;
  K.pointwise(a, n * hw, H.cin, H.cin_p, H.w.data(), H.cout_p, H.bias.data(), H.act, nullptr, b);
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
      logits[i * classes + j] = acc + cb[j];
    }
  }
}

// One request, by all members of a team together.
// Builds a subnet's program, recalibrates its BN statistics when calibration images are given
// (all team members together) and packs the folded weights for inference.
Program prepare_program(const KernelTable& K, const NetSpec& spec, const SubnetPlan& plan, const float* calibration,
                        int64_t num_calibration, int64_t calibration_batch, Member& m) {
  Program prog = build_program(spec, plan);
  const int size = m.team->size, rank = m.rank;
  const int64_t res = plan.resolution, in_img = spec.in_channels * res * res;
  const bool recal = calibration != nullptr && num_calibration > 0;
  int64_t per_member = kEvalChunk;
  if (recal) per_member = std::max(per_member, (calibration_batch + size - 1) / size);
  m.reserve(static_cast<size_t>(per_member * prog.max_act));
  if (recal) {
    for (Layer& L : prog.layers) pack(L, nullptr, nullptr);
    for (int64_t start = 0; start < num_calibration; start += calibration_batch) {
      const int64_t bsz = std::min(calibration_batch, num_calibration - start);
      const int64_t share = (bsz + size - 1) / size;
      const int64_t b0 = std::min(bsz, rank * share), b1 = std::min(bsz, b0 + share);
      train_forward(K, spec, prog, calibration + (start + b0) * in_img, b1 - b0, m);
    }
  }
  for (Layer& L : prog.layers) pack_folded(L, recal, spec.bn_eps);
  return prog;
}

// Inference of the chunks rank, rank + stride, ... of n images; returns the top-1 hits.
int64_t infer(const KernelTable& K, const NetSpec& spec, Program& prog, const float* images, int64_t n,
              const int64_t* labels, float* logits, int rank, int stride, Member& m) {
  const int64_t classes = spec.num_classes, in_img = spec.in_channels * prog.layers[0].in_h * prog.layers[0].in_w;
  m.reserve(static_cast<size_t>(kEvalChunk * prog.max_act));
  std::vector<float> local(kEvalChunk * classes);
  int64_t hits = 0;
  const int64_t chunks = (n + kEvalChunk - 1) / kEvalChunk;
  for (int64_t ci = rank; ci < chunks; ci += stride) {
    const int64_t i0 = ci * kEvalChunk, cnt = std::min(kEvalChunk, n - i0);
    float* out = logits ? logits + i0 * classes : local.data();
    forward(K, spec, prog, images + i0 * in_img, cnt, m, out);
    if (labels)
      for (int64_t i = 0; i < cnt; ++i) {
        const float* row = out + i * classes;
        const int64_t best = std::max_element(row, row + classes) - row;
        hits += best == labels[i0 + i];
      }
  }
  return hits;
}

// One request, by all members of a team together.
void run_request(const KernelTable& K, const NetSpec& spec, EvalRequest& req, Member& m,
                 std::atomic<int64_t>& correct) {
  Program prog = prepare_program(K, spec, req.plan, req.calibration, req.num_calibration, req.calibration_batch, m);
  correct.fetch_add(infer(K, spec, prog, req.images, req.num_images, req.labels, req.logits, m.rank, m.team->size, m));
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

void SubnetEvaluator::run(std::vector<EvalRequest>& requests, int num_threads) const {
  if (num_threads < 1) throw std::invalid_argument("num_threads must be >= 1");
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
  const bool solo = static_cast<int64_t>(requests.size()) >= threads;  // one request per thread
  const int team_size = solo ? 1 : threads;
  const int num_teams = threads / team_size;
  std::atomic<bool> abort{false};
  std::vector<std::unique_ptr<Team>> teams;
  for (int t = 0; t < num_teams; ++t) teams.emplace_back(new Team(team_size, max_channels, &abort));
  std::vector<std::atomic<int64_t>> correct(requests.size());
  for (auto& c : correct) c.store(0);
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&](int tid) {
    Member m;
    m.team = teams[tid / team_size].get();
    m.rank = tid % team_size;
    try {
      if (solo) {
        for (size_t i = next.fetch_add(1); i < requests.size() && !abort.load(); i = next.fetch_add(1))
          run_request(K, spec_, requests[i], m, correct[i]);
      } else {
        for (size_t i = 0; i < requests.size() && !abort.load(); ++i) run_request(K, spec_, requests[i], m, correct[i]);
      }
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
  for (size_t i = 0; i < requests.size(); ++i) requests[i].correct = correct[i].load();
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
      infer(K, *impl_->spec, prog, images, n, nullptr, out, rank, threads, m);
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
      &spec_, prepare_program(kernels(), spec_, plan, calibration, num_calibration, calibration_batch, m)});
  return prepared;
}

}  // namespace eval
}  // namespace codesign
