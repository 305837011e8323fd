// Subnet evaluator for the elastic supernet: BN recalibration and inference of any subnet, on CPU.
//
// The evaluator holds the supernet's weights once (float32, one contiguous copy per tensor). For
// every subnet it packs the sliced weights (leading channels, centre-cropped depthwise kernels)
// with BatchNorm folded in, then runs the network in NHWC with fused activations. BN
// recalibration reproduces torch's train-mode BatchNorm with momentum=None (running statistics
// are the average over batches of the batch mean and the unbiased batch variance).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace codesign {
namespace eval {

// Bytes of shared prefix activations a run keeps by default (see SubnetEvaluator::run).
constexpr int64_t kDefaultShareMemoryBytes = int64_t{1} << 30;

enum class Act { kNone = 0, kReLU = 1, kReLU6 = 2, kHSwish = 3 };

// Parses "relu" / "relu6" / "hswish"; throws std::invalid_argument otherwise.
Act parse_activation(const std::string& name);

// Instruction sets the kernels are built for that this CPU runs, slowest first ("base", then
// "avx2" and "avx512" on x86-64 CPUs that have them).
std::vector<std::string> supported_isas();

// The instruction set the kernels run with: the fastest supported one, or at most the one named by
// the environment variable CODESIGN_EVAL_ISA (read once; an unknown or unsupported name throws
// std::invalid_argument when the kernels are first used).
std::string active_isa();

// Makes later evaluations (and subnets prepared later) run with `isa`, one of supported_isas();
// throws std::invalid_argument otherwise. For comparing the paths; not for use while a run is going.
void set_active_isa(const std::string& isa);

// A dense float32 tensor owned by the evaluator.
struct Tensor {
  std::vector<float> data;
  std::vector<int64_t> shape;
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
};

// BatchNorm parameters and running statistics of one layer (each `channels` long).
struct BatchNorm {
  Tensor weight, bias, running_mean, running_var;
};

// One block slot of the supernet with its largest weights.
struct SlotSpec {
  int64_t max_in = 0, max_mid = 0, max_out = 0, max_kernel = 0;
  int stride = 1;
  Act act = Act::kReLU;
  bool residual = false;
  Tensor expand_w;     // (max_mid, max_in, 1, 1)
  BatchNorm expand_bn;
  Tensor depthwise_w;  // (max_mid, 1, max_kernel, max_kernel)
  BatchNorm depthwise_bn;
  Tensor project_w;    // (max_out, max_mid, 1, 1)
  BatchNorm project_bn;
};

// The whole supernet: its structure and weights.
struct NetSpec {
  int64_t in_channels = 0, num_classes = 0;
  int64_t stem_out = 0, stem_kernel = 0;
  int stem_stride = 1;
  Act stem_act = Act::kReLU;
  Tensor stem_w;  // (stem_out, in_channels, k, k)
  BatchNorm stem_bn;
  std::vector<SlotSpec> slots;
  int64_t head_in = 0, head_out = 0;
  Act head_act = Act::kReLU;
  Tensor head_w;  // (head_out, head_in, 1, 1)
  BatchNorm head_bn;
  Tensor classifier_w;  // (num_classes, head_out)
  Tensor classifier_b;  // (num_classes)
  float bn_eps = 1e-5f;
};

// One active block of a subnet: which slot, its expanded and output widths and kernel size.
struct BlockChoice {
  int64_t slot = 0, mid = 0, out = 0, kernel = 0;
};

// A subnet: input resolution and its active blocks in network order.
struct SubnetPlan {
  int64_t resolution = 0;
  std::vector<BlockChoice> blocks;
};

// One unit of work: a subnet, the images to score (NCHW float32 at the plan's resolution),
// optional calibration images (BN recalibration when non-null) and optional outputs.
struct EvalRequest {
  SubnetPlan plan;
  const float* images = nullptr;
  int64_t num_images = 0;
  const float* calibration = nullptr;  // nullptr: use the supernet's BN statistics
  int64_t num_calibration = 0;
  int64_t calibration_batch = 0;
  const int64_t* labels = nullptr;  // nullptr: no accuracy count
  float* logits = nullptr;          // nullptr: logits not returned; else (num_images, num_classes)
  int64_t correct = 0;              // output: top-1 hits (first maximum wins, as torch.argmax)
  int64_t shared_depth = -1;        // output: leading blocks computed once for several requests (0: the
                                    // stem only, -1: nothing shared)
};

// A subnet with BN recalibrated and folded, its weights packed: repeated inference without the
// per-call slicing. Keeps a pointer to its SubnetEvaluator's weights (which must outlive it).
class PreparedSubnet {
 public:
  PreparedSubnet();
  ~PreparedSubnet();
  PreparedSubnet(PreparedSubnet&&) noexcept;
  PreparedSubnet& operator=(PreparedSubnet&&) noexcept;

  int64_t resolution() const;
  int64_t in_channels() const;
  int64_t num_classes() const;
  // Logits of n NCHW images at resolution() into out (n x num_classes). Thread-safe.
  void logits(const float* images, int64_t n, float* out, int num_threads) const;

 private:
  friend class SubnetEvaluator;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class SubnetEvaluator {
 public:
  // Validates the spec (shapes of every tensor); throws std::invalid_argument on a mismatch.
  explicit SubnetEvaluator(NetSpec spec);

  const NetSpec& spec() const { return spec_; }

  // Throws std::invalid_argument naming the problem when `plan` is not a subnet of this supernet.
  void validate(const SubnetPlan& plan) const;

  // Runs every request with `num_threads` threads (requests in parallel when there are enough,
  // otherwise all threads on one request at a time). Validates everything before starting. With
  // `share_memory_bytes` > 0, requests with the same inputs and resolution compute the stem and
  // their identical leading blocks once (BN recalibration included): those activations are kept for
  // the run, shallowest prefixes first while they fit in share_memory_bytes, and each request
  // continues from its deepest shared one. 0 computes every request from its images.
  void run(std::vector<EvalRequest>& requests, int num_threads,
           int64_t share_memory_bytes = kDefaultShareMemoryBytes) const;

  // Slices `plan`, recalibrates BN on the calibration images when given (one thread), folds it.
  PreparedSubnet prepare(const SubnetPlan& plan, const float* calibration, int64_t num_calibration,
                         int64_t calibration_batch) const;

 private:
  NetSpec spec_;
};

}  // namespace eval
}  // namespace codesign
