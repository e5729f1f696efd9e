"""Sequence memory modules behind one ``Memory`` interface, and the shared linear scan."""

from lifelong.memory.base import Memory, State
from lifelong.memory.mlp import MLPConfig, MLPMemory
from lifelong.memory.scan import linear_scan, reverse_linear_scan

__all__ = ["Memory", "State", "MLPConfig", "MLPMemory", "linear_scan", "reverse_linear_scan"]
