// pybind11 bindings: the private extension module `codesign._kernels`.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "evaluator.h"
#include "importance.h"

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using LongArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

namespace {

py::array_t<float> group_l1_importance_py(const std::vector<FloatArray>& tensors, int num_threads) {
  if (tensors.empty()) throw py::value_error("group_l1_importance: need at least one tensor");
  std::vector<codesign::ChannelMatrix> mats;
  mats.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (t.ndim() < 1 || t.shape(0) == 0)
      throw py::value_error("group_l1_importance: tensor " + std::to_string(i) + " has no channel axis");
    const int64_t channels = t.shape(0);
    const int64_t row = channels ? t.size() / channels : 0;
    mats.push_back({t.data(), channels, row});
  }
  const int64_t channels = mats.front().channels;
  for (size_t i = 0; i < mats.size(); ++i)
    if (mats[i].channels != channels)
      throw py::value_error("group_l1_importance: tensor " + std::to_string(i) + " has " +
                            std::to_string(mats[i].channels) + " channels, expected " + std::to_string(channels));
  py::array_t<float> out(channels);
  {
    py::gil_scoped_release release;
    codesign::group_l1_importance(mats, out.mutable_data(), num_threads);
  }
  return out;
}

py::array_t<int64_t> rank_channels_py(const FloatArray& scores) {
  if (scores.ndim() != 1) throw py::value_error("rank_channels: scores must be one-dimensional");
  std::vector<int64_t> order;
  {
    py::gil_scoped_release release;
    order = codesign::rank_channels(scores.data(), scores.shape(0));
  }
  py::array_t<int64_t> out(static_cast<py::ssize_t>(order.size()));
  std::copy(order.begin(), order.end(), out.mutable_data());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Subnet evaluator

namespace ev = codesign::eval;

template <class T>
T dict_get(const py::dict& d, const char* key, const std::string& where) {
  if (!d.contains(key)) throw py::value_error(where + " is missing '" + key + "'");
  try {
    return d[key].cast<T>();
  } catch (const py::cast_error&) {
    throw py::value_error(where + " has a bad '" + key + "'");
  }
}

ev::Tensor tensor_from(const py::dict& weights, const std::string& name) {
  if (!weights.contains(name.c_str())) throw py::value_error("weights: missing tensor '" + name + "'");
  FloatArray a;
  try {
    a = weights[name.c_str()].cast<FloatArray>();
  } catch (const py::cast_error&) {
    throw py::value_error("weights: '" + name + "' is not a float array");
  }
  ev::Tensor t;
  t.shape.assign(a.shape(), a.shape() + a.ndim());
  t.data.assign(a.data(), a.data() + a.size());
  return t;
}

ev::BatchNorm bn_from(const py::dict& weights, const std::string& prefix) {
  return {tensor_from(weights, prefix + ".weight"), tensor_from(weights, prefix + ".bias"),
          tensor_from(weights, prefix + ".running_mean"), tensor_from(weights, prefix + ".running_var")};
}

std::unique_ptr<ev::SubnetEvaluator> make_evaluator(const py::dict& config, const py::dict& weights) {
  ev::NetSpec s;
  s.in_channels = dict_get<int64_t>(config, "in_channels", "config");
  s.num_classes = dict_get<int64_t>(config, "num_classes", "config");
  s.bn_eps = dict_get<float>(config, "bn_eps", "config");
  const py::dict stem = dict_get<py::dict>(config, "stem", "config");
  s.stem_out = dict_get<int64_t>(stem, "out_channels", "config['stem']");
  s.stem_kernel = dict_get<int64_t>(stem, "kernel_size", "config['stem']");
  s.stem_stride = dict_get<int>(stem, "stride", "config['stem']");
  s.stem_act = ev::parse_activation(dict_get<std::string>(stem, "activation", "config['stem']"));
  s.stem_w = tensor_from(weights, "stem_conv.weight");
  s.stem_bn = bn_from(weights, "stem_bn");
  const py::list slots = dict_get<py::list>(config, "slots", "config");
  for (size_t i = 0; i < slots.size(); ++i) {
    const std::string where = "config['slots'][" + std::to_string(i) + "]";
    const py::dict d = slots[i].cast<py::dict>();
    ev::SlotSpec b;
    b.max_in = dict_get<int64_t>(d, "max_in", where);
    b.max_mid = dict_get<int64_t>(d, "max_mid", where);
    b.max_out = dict_get<int64_t>(d, "max_out", where);
    b.max_kernel = dict_get<int64_t>(d, "max_kernel", where);
    b.stride = dict_get<int>(d, "stride", where);
    b.act = ev::parse_activation(dict_get<std::string>(d, "activation", where));
    b.residual = dict_get<bool>(d, "residual", where);
    const std::string p = "blocks." + std::to_string(i) + ".";
    b.expand_w = tensor_from(weights, p + "expand_conv.weight");
    b.expand_bn = bn_from(weights, p + "expand_bn");
    b.depthwise_w = tensor_from(weights, p + "depthwise_conv.weight");
    b.depthwise_bn = bn_from(weights, p + "depthwise_bn");
    b.project_w = tensor_from(weights, p + "project_conv.weight");
    b.project_bn = bn_from(weights, p + "project_bn");
    s.slots.push_back(std::move(b));
  }
  const py::dict head = dict_get<py::dict>(config, "head", "config");
  s.head_in = dict_get<int64_t>(head, "in_channels", "config['head']");
  s.head_out = dict_get<int64_t>(head, "out_channels", "config['head']");
  s.head_act = ev::parse_activation(dict_get<std::string>(head, "activation", "config['head']"));
  s.head_w = tensor_from(weights, "head_conv.weight");
  s.head_bn = bn_from(weights, "head_bn");
  s.classifier_w = tensor_from(weights, "classifier.weight");
  s.classifier_b = tensor_from(weights, "classifier.bias");
  return std::make_unique<ev::SubnetEvaluator>(std::move(s));
}

ev::SubnetPlan plan_from(const py::handle& obj, size_t index) {
  const std::string where = "plan " + std::to_string(index);
  std::pair<int64_t, std::vector<std::array<int64_t, 4>>> raw;
  try {
    raw = obj.cast<decltype(raw)>();
  } catch (const py::cast_error&) {
    throw py::value_error(where + " must be (resolution, [(slot, mid, out, kernel), ...])");
  }
  ev::SubnetPlan plan;
  plan.resolution = raw.first;
  for (const auto& b : raw.second) plan.blocks.push_back({b[0], b[1], b[2], b[3]});
  return plan;
}

// images[res] -> NCHW float32 array, checked against the network's input channels and `res`.
std::map<int64_t, FloatArray> images_by_resolution(const py::dict& d, int64_t channels, const char* what) {
  std::map<int64_t, FloatArray> out;
  for (const auto& item : d) {
    int64_t res;
    FloatArray a;
    try {
      res = item.first.cast<int64_t>();
      a = item.second.cast<FloatArray>();
    } catch (const py::cast_error&) {
      throw py::value_error(std::string(what) + " must map int resolutions to float arrays");
    }
    if (a.ndim() != 4 || a.shape(1) != channels || a.shape(2) != res || a.shape(3) != res)
      throw py::value_error(std::string(what) + "[" + std::to_string(res) + "] must have shape (N, " +
                            std::to_string(channels) + ", " + std::to_string(res) + ", " + std::to_string(res) +
                            "), got ndim " + std::to_string(a.ndim()) + " with shape " + [&] {
                              std::string s = "(";
                              for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
                              return s + ")";
                            }());
    out.emplace(res, std::move(a));
  }
  return out;
}

py::tuple evaluator_run(const ev::SubnetEvaluator& self, const py::list& plans, const py::dict& images,
                        const std::optional<LongArray>& labels, const std::optional<py::dict>& calibration,
                        int64_t calibration_batch_size, int num_threads, bool return_logits,
                        bool share_prefixes, double share_memory_mb, bool return_sharing) {
  if (num_threads < 1) throw py::value_error("num_threads must be >= 1");
  if (!(share_memory_mb >= 0.0)) throw py::value_error("share_memory_mb must be >= 0");
  const ev::NetSpec& spec = self.spec();
  auto imgs = images_by_resolution(images, spec.in_channels, "images");
  std::map<int64_t, FloatArray> calib;
  if (calibration) {
    if (calibration_batch_size < 1) throw py::value_error("calibration_batch_size must be >= 1");
    calib = images_by_resolution(*calibration, spec.in_channels, "calibration");
  }
  int64_t n_images = -1;
  for (const auto& kv : imgs) {
    if (n_images >= 0 && kv.second.shape(0) != n_images)
      throw py::value_error("images: every resolution must hold the same number of images");
    n_images = kv.second.shape(0);
  }
  if (labels) {
    if (labels->ndim() != 1 || labels->shape(0) != std::max<int64_t>(n_images, 0))
      throw py::value_error("labels must be one-dimensional with one label per image");
  }
  std::vector<ev::EvalRequest> requests(plans.size());
  py::list logits_out;
  for (size_t i = 0; i < plans.size(); ++i) {
    ev::EvalRequest& r = requests[i];
    r.plan = plan_from(plans[i], i);
    auto it = imgs.find(r.plan.resolution);
    if (it == imgs.end())
      throw py::value_error("plan " + std::to_string(i) + ": no images at resolution " +
                            std::to_string(r.plan.resolution));
    r.images = it->second.data();
    r.num_images = it->second.shape(0);
    if (calibration) {
      auto ct = calib.find(r.plan.resolution);
      if (ct == calib.end())
        throw py::value_error("plan " + std::to_string(i) + ": no calibration images at resolution " +
                              std::to_string(r.plan.resolution));
      r.calibration = ct->second.data();
      r.num_calibration = ct->second.shape(0);
      r.calibration_batch = calibration_batch_size;
    }
    if (labels) r.labels = labels->data();
    if (return_logits) {
      py::array_t<float> out({static_cast<py::ssize_t>(r.num_images), static_cast<py::ssize_t>(spec.num_classes)});
      r.logits = out.mutable_data();
      logits_out.append(out);
    }
  }
  {
    py::gil_scoped_release release;
    self.run(requests, num_threads, share_prefixes ? static_cast<int64_t>(share_memory_mb * 1048576.0) : 0);
  }
  py::array_t<int64_t> correct(static_cast<py::ssize_t>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) correct.mutable_data()[i] = requests[i].correct;
  py::object logits = return_logits ? py::object(logits_out) : py::object(py::none());
  if (!return_sharing) return py::make_tuple(correct, logits);
  py::array_t<int64_t> shared(static_cast<py::ssize_t>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) shared.mutable_data()[i] = requests[i].shared_depth;
  return py::make_tuple(correct, logits, shared);
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "codesign's C++ kernels (see cpp_kernels/).";
  m.def("group_l1_importance", &group_l1_importance_py, py::arg("tensors"), py::arg("num_threads") = 1,
        "Per-channel importance of a dependency group: the sum over tensors of each channel's L1 norm divided by "
        "that tensor's mean channel norm. Each tensor's first axis is the channel axis.");
  m.def("rank_channels", &rank_channels_py, py::arg("scores"),
        "Channel indices by descending score (stable: ties keep the lower index first).");
  m.def("evaluator_isas", &ev::supported_isas,
        "Instruction sets the evaluator's kernels are built for that this CPU runs, slowest first.");
  m.def("evaluator_isa", &ev::active_isa,
        "The instruction set the evaluator runs with (the fastest, or at most CODESIGN_EVAL_ISA's).");
  m.def("set_evaluator_isa", &ev::set_active_isa, py::arg("isa"),
        "Run later evaluations with this instruction set (one of evaluator_isas()); for comparing the paths.");

  py::class_<ev::SubnetEvaluator>(m, "SubnetEvaluator",
                                  "Holds an elastic supernet's weights and evaluates its subnets (see cpp_kernels/"
                                  "evaluator.h).")
      .def(py::init(&make_evaluator), py::arg("config"), py::arg("weights"),
           "config: in_channels, num_classes, bn_eps, stem{out_channels, kernel_size, stride, activation}, "
           "slots[{max_in, max_mid, max_out, max_kernel, stride, activation, residual}], head{in_channels, "
           "out_channels, activation}; weights: the supernet's state_dict as float32 arrays.")
      .def(
          "validate",
          [](const ev::SubnetEvaluator& self, const py::handle& plan) { self.validate(plan_from(plan, 0)); },
          py::arg("plan"), "Raise ValueError when plan (resolution, [(slot, mid, out, kernel), ...]) is not a subnet.")
      .def("run", &evaluator_run, py::arg("plans"), py::arg("images"), py::arg("labels") = py::none(),
           py::arg("calibration") = py::none(), py::arg("calibration_batch_size") = 250, py::arg("num_threads") = 1,
           py::arg("return_logits") = false, py::arg("share_prefixes") = true,
           py::arg("share_memory_mb") = static_cast<double>(ev::kDefaultShareMemoryBytes) / 1048576.0,
           py::arg("return_sharing") = false,
           "Evaluate subnets: images and calibration map resolution -> NCHW float32 arrays. With calibration, "
           "BN statistics are recalibrated per subnet (torch train-mode BN, cumulative average over batches). "
           "With share_prefixes, plans at the same resolution compute their stem and identical leading blocks "
           "once, keeping at most share_memory_mb MiB of their activations for the run. Returns (top-1 hits per "
           "plan as int64 array, list of (N, classes) logits or None), plus with "
           "return_sharing the leading blocks each plan took from a shared prefix (0: stem only, -1: none).")
      .def(
          "prepare",
          [](const ev::SubnetEvaluator& self, const py::handle& plan_obj, const std::optional<FloatArray>& calibration,
             int64_t calibration_batch_size) {
            const ev::SubnetPlan plan = plan_from(plan_obj, 0);
            const float* calib = nullptr;
            int64_t n_calib = 0;
            if (calibration) {
              const int64_t r = plan.resolution, c = self.spec().in_channels;
              const auto& a = *calibration;
              if (a.ndim() != 4 || a.shape(1) != c || a.shape(2) != r || a.shape(3) != r)
                throw py::value_error("calibration must have shape (N, " + std::to_string(c) + ", " +
                                      std::to_string(r) + ", " + std::to_string(r) + ")");
              calib = a.data();
              n_calib = a.shape(0);
            }
            py::gil_scoped_release release;
            return self.prepare(plan, calib, n_calib, calibration_batch_size);
          },
          py::arg("plan"), py::arg("calibration") = py::none(), py::arg("calibration_batch_size") = 250,
          py::keep_alive<0, 1>(),
          "A PreparedSubnet: plan sliced, BN recalibrated on calibration (if given) and folded, for repeated "
          "inference.");

  py::class_<ev::PreparedSubnet>(m, "PreparedSubnet", "A subnet ready for inference (see SubnetEvaluator.prepare).")
      .def_property_readonly("resolution", &ev::PreparedSubnet::resolution)
      .def(
          "logits",
          [](const ev::PreparedSubnet& self, const FloatArray& images, int num_threads) {
            const int64_t r = self.resolution(), c = self.in_channels();
            if (images.ndim() != 4 || images.shape(1) != c || images.shape(2) != r || images.shape(3) != r)
              throw py::value_error("images must have shape (N, " + std::to_string(c) + ", " + std::to_string(r) +
                                    ", " + std::to_string(r) + ")");
            if (num_threads < 1) throw py::value_error("num_threads must be >= 1");
            const int64_t n = images.shape(0);
            py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(self.num_classes())});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release release;
              self.logits(images.data(), n, dst, num_threads);
            }
            return out;
          },
          py::arg("images"), py::arg("num_threads") = 1);
}
