"""Compiling whole subnets with TVM under the per-layer schedules a genome chooses."""
