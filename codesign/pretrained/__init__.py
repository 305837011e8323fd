"""Shipped pretrained supernets (package data: safetensors weights and their metrics)."""
