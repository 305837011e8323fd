"""Latency side: the fused layer workloads of subnets (keys of the measured latency tables)."""

from codesign.latency.workloads import Workload, enumerate_workloads, subnet_macs, subnet_workloads

__all__ = ["Workload", "enumerate_workloads", "subnet_macs", "subnet_workloads"]
