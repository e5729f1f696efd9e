"""Population Based Training: a pure controller, member tasks, local and Ray backends, the runner."""

from lifelong.population.controller import Decision, MemberState, PBTController
from lifelong.population.runner import Population
from lifelong.population.tasks import MemberTask, RLTask, SegmentResult

__all__ = ["Decision", "MemberState", "PBTController", "Population", "MemberTask", "RLTask", "SegmentResult"]
