// pybind11 bindings: the private extension module `codesign._kernels`.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "importance.h"

namespace py = pybind11;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

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

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "codesign's C++ kernels (see cpp_kernels/).";
  m.def("group_l1_importance", &group_l1_importance_py, py::arg("tensors"), py::arg("num_threads") = 1,
        "Per-channel importance of a dependency group: the sum over tensors of each channel's L1 norm divided by "
        "that tensor's mean channel norm. Each tensor's first axis is the channel axis.");
  m.def("rank_channels", &rank_channels_py, py::arg("scores"),
        "Channel indices by descending score (stable: ties keep the lower index first).");
}
