"""codesign: hardware/model co-design of compiled neural networks.

Search an elastic supernet's architecture, per-layer pruning ratios and TVM schedules jointly
for the best accuracy within a latency budget measured on the target device.
"""

__version__ = "0.1.0"
