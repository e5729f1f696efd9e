"""Curriculum teachers: each proposes per-episode env parameters and learns from the outcomes.

Importing this package (its teacher modules, below) registers ``random``, ``alp_gmm``,
``covar_gmm``, ``riac`` and ``plr`` in ``lifelong.registry.TEACHERS``;
``build_teacher(cfg, space, seed)`` makes the one a config names.
"""

from lifelong.curricula.alp_gmm import ALPGMMConfig, ALPGMMTeacher
from lifelong.curricula.base import Teacher, build_teacher
from lifelong.curricula.covar_gmm import CovarGMMConfig, CovarGMMTeacher
from lifelong.curricula.plr import PLRConfig, PLRTeacher
from lifelong.curricula.random_teacher import RandomTeacher, RandomTeacherConfig
from lifelong.curricula.riac import RIACConfig, RIACTeacher

__all__ = [
    "ALPGMMConfig",
    "ALPGMMTeacher",
    "CovarGMMConfig",
    "CovarGMMTeacher",
    "PLRConfig",
    "PLRTeacher",
    "RIACConfig",
    "RIACTeacher",
    "RandomTeacher",
    "RandomTeacherConfig",
    "Teacher",
    "build_teacher",
]
