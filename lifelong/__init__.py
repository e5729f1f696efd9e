"""lifelong: reinforcement-learning agents that remember, model their world and keep learning."""

__version__ = "0.1.0"
