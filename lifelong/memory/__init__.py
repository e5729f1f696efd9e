"""Sequence memory modules behind one ``Memory`` interface, and the shared linear scan."""

from lifelong.memory.base import Memory, State
from lifelong.memory.ffm import FFMConfig, FFMMemory
from lifelong.memory.mlp import MLPConfig, MLPMemory
from lifelong.memory.rnn import GRUConfig, GRUMemory, LSTMConfig, LSTMMemory
from lifelong.memory.s5 import S5Config, S5Memory
from lifelong.memory.scan import linear_scan, reverse_linear_scan
from lifelong.memory.hcam import HCAMConfig, HCAMMemory
from lifelong.memory.transformer import TransformerConfig, TransformerMemory

__all__ = [
    "Memory", "State", "MLPConfig", "MLPMemory", "GRUConfig", "GRUMemory", "LSTMConfig", "LSTMMemory",
    "S5Config", "S5Memory", "FFMConfig", "FFMMemory", "HCAMConfig", "HCAMMemory", "TransformerConfig",
    "TransformerMemory", "linear_scan", "reverse_linear_scan",
]
