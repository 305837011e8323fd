"""The weight-sharing elastic supernet, its static subnets, channel importance and weight files."""

from codesign.supernet.importance import reorganize_channels
from codesign.supernet.static import StaticSubnet
from codesign.supernet.supernet import ElasticSupernet, resize_to
from codesign.supernet.weights import LoadedSupernet, load_supernet, save_supernet

__all__ = [
    "ElasticSupernet",
    "LoadedSupernet",
    "StaticSubnet",
    "load_supernet",
    "reorganize_channels",
    "resize_to",
    "save_supernet",
]
