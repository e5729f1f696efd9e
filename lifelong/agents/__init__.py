"""Algorithms: each registers a trainer factory under its ``agent.name``."""

from lifelong.agents import dqn  # noqa: F401  (registers "dqn")
from lifelong.agents import dreamer  # noqa: F401  (registers "dreamer")
from lifelong.agents import ppo  # noqa: F401  (registers "ppo")
from lifelong.agents import sac  # noqa: F401  (registers "sac")
from lifelong.agents import sb3  # noqa: F401  (registers "sb3")
from lifelong.agents import td3  # noqa: F401  (registers "td3")
from lifelong.agents.base import Agent, Trainer

__all__ = ["Agent", "Trainer"]
