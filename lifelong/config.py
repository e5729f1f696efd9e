"""Typed run configuration: dataclass schema, YAML presets and dotted command-line overrides.

A config has one section per part (``run``, ``env``, ``agent``). Sections whose
content depends on a chosen part (``agent`` by ``agent.name``, ``agent.memory`` by
``agent.memory.name``) take their schema from the registry entry of that part, so a
single key swaps the part and the keys it accepts. Every value is checked against
its declared type, range and choices; errors name the key, the value and what is
allowed, and unknown keys suggest the closest valid one. Strings are never evaluated.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config value or key that is not allowed; the message is one line naming the key."""


def setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    key: str | None = None,
    registry: str | None = None,
) -> Any:
    """A config field with its docstring, optional numeric bounds and YAML key alias.

    ``low``/``high`` bound numbers (inclusive; ``low_open`` makes the lower bound
    exclusive); ``key`` is the YAML spelling when it differs from the attribute
    (``import``); ``registry`` names the registry whose names are the allowed values.
    """
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open, "key": key, "registry": registry}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        proto = default
        return field(default_factory=lambda: copy.deepcopy(proto), metadata=meta)
    return field(default=default, metadata=meta)


def _yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


# --------------------------------------------------------------------------- schema


@dataclass
class RunConfig:
    """Settings of the run itself: naming, seeding, device, budget, evaluation, checkpoints."""

    name: str = setting("run", "Run name; the run dir is runs/<name> unless --run-dir is given.")
    seed: int = setting(0, "Seed for torch, numpy, Python and the environments.", low=0)
    device: str = setting("cpu", "Torch device for networks and native envs: cpu, cuda, cuda:N, mps.")
    total_steps: int = setting(100_000, "Environment steps to train for (summed over envs).", low=1)
    eval_every: int = setting(10_000, "Evaluate every this many env steps (0: only at the end).", low=0)
    eval_episodes: int = setting(20, "Episodes per evaluation.", low=1)
    eval_num_envs: int = setting(8, "Parallel envs used for evaluation.", low=1)
    eval_deterministic: bool = setting(True, "Evaluate with the mode of the policy instead of sampling.")
    checkpoint_every: int = setting(50_000, "Write a checkpoint every this many env steps (0: only at the end).", low=0)
    keep_checkpoints: int = setting(3, "Checkpoints kept on disk; older good ones are deleted.", low=1)
    log_every: int = setting(2_000, "Write training scalars every this many env steps.", low=1)
    progress: bool = setting(True, "Show a progress bar (steps, SPS, recent return).")
    torch_threads: int = setting(0, "torch.set_num_threads; 0 keeps torch's default.", low=0)
    keep_freed_memory: bool = setting(
        True, "glibc malloc keeps freed memory for reuse (mmap only above 32 MiB, no trimming) instead of "
              "page-faulting large tensors in at every step; faster CPU training, peak heap stays resident.")
    stop_return: float | None = setting(
        None, "Stop early once a mean evaluation return reaches this value (null: never)."
    )


@dataclass
class EnvConfig:
    """Which environment, through which backend, how many copies, and optional normalisation."""

    backend: str = setting("envpool", "Env backend.", registry="envs")
    id: str = setting("CartPole-v1", "Env id (EnvPool or Gymnasium id), or 'module:Class' for a Gymnasium env class.")
    num_envs: int = setting(8, "Number of envs stepped together.", low=1)
    import_: str | None = setting(
        None, "Module imported before the env is made, e.g. one that registers Gymnasium ids.", key="import"
    )
    kwargs: dict = setting({}, "Keyword arguments passed to the env constructor.")
    vectorization: Literal["sync", "async"] = setting(
        "sync", "Gymnasium backend: SyncVectorEnv (one process) or AsyncVectorEnv (one process per env)."
    )
    autoreset_mode: Literal["same_step", "next_step", "disabled"] = setting(
        "same_step",
        "Gymnasium backend: autoreset mode of the underlying vector env; every mode is normalised "
        "to the platform's same-step contract.",
    )
    num_threads: int = setting(0, "EnvPool backend: worker threads (0: one per core).", low=0)
    max_episode_steps: int | None = setting(None, "Truncate episodes after this many steps (null: env default).")
    normalize_obs: bool = setting(False, "Normalise observations by running mean and std.")
    normalize_reward: bool = setting(False, "Scale rewards by the running std of the discounted return.")
    clip_obs: float = setting(10.0, "Clip normalised observations to [-clip_obs, clip_obs].", low=0.0, low_open=True)
    clip_reward: float = setting(10.0, "Clip scaled rewards to [-clip_reward, clip_reward].", low=0.0, low_open=True)
    gamma: float = setting(0.99, "Discount of the return whose std scales rewards.", low=0.0, high=1.0)


@dataclass
class PBTConfig:
    """Population Based Training: population, schedule of exploit/explore, mutations, backend.

    ``hyperparams`` maps dotted config keys to their priors, for example
    ``{agent.lr: {low: 1e-4, high: 1e-2, scale: log}, agent.epochs: {low: 2, high: 20,
    scale: linear, integer: true}}``.
    """

    population: int = setting(4, "Members trained together.", low=2)
    ready_steps: int = setting(10_000, "Env steps a member trains between exploit/explore decisions.", low=1)
    burn_in_steps: int = setting(0, "No exploit before a member has trained this many env steps.", low=0)
    quantile: float = setting(0.25, "Bottom fraction that copies from the top fraction of the same size.",
                              low=0.0, high=0.5, low_open=True)
    perturb_factors: list[float] = setting([0.8, 1.2], "Explore: multiply by one of these (in log space for log scale).")
    resample_probability: float = setting(0.25, "Explore: resample from the prior instead, with this probability.",
                                          low=0.0, high=1.0)
    min_score_gap: float = setting(0.0, "Exploit only if the donor's score beats the member's by at least this.",
                                   low=0.0)
    score_window: int = setting(1, "A member's score is the mean of its last this-many evaluations.", low=1)
    initial: Literal["sample", "config"] = setting(
        "sample", "Initial hyperparameters: drawn from the priors, or the config's values for every member.")
    synchronous: bool = setting(True, "Decide once per generation (all members ready) instead of per member.")
    backend: Literal["local", "ray"] = setting("local", "Where members run: local processes or a Ray cluster.")
    workers: int = setting(2, "Members trained at the same time.", low=1)
    address: str | None = setting(None, "Ray: address of an existing cluster (HOST:PORT); null starts a local one.")
    storage: str | None = setting(None, "Ray: shared directory for member run dirs (default: the population dir).")
    max_restarts: int = setting(3, "Restarts of a crashed member from its last checkpoint before it is replaced.",
                                low=0)
    seed: int = setting(0, "Seed of the controller's decisions (members use run.seed + member id).", low=0)
    hyperparams: dict = setting({}, "Mutable hyperparameters: dotted key -> {low, high, scale: log|linear, integer}.")

    def validate(self, prefix: str) -> None:
        """Check the factors and every hyperparameter prior."""
        if not self.perturb_factors or any(f <= 0 for f in self.perturb_factors):
            raise ConfigError(f"{prefix}perturb_factors: {self.perturb_factors!r} (allowed: positive numbers)")
        if not self.hyperparams:
            raise ConfigError(f"{prefix}hyperparams: empty (allowed: dotted key -> {{low, high, scale, integer}})")
        for key, spec in self.hyperparams.items():
            HyperparamPrior.from_config(f"{prefix}hyperparams.{key}", spec)


@dataclass(frozen=True)
class HyperparamPrior:
    """The prior and bounds of one mutable hyperparameter."""

    low: float
    high: float
    scale: str = "log"
    integer: bool = False

    @classmethod
    def from_config(cls, key: str, spec: Any) -> "HyperparamPrior":
        """Validate ``{low, high, scale, integer}``; errors name ``key``."""
        if not isinstance(spec, dict):
            raise ConfigError(f"{key}: {spec!r} is not a mapping (allowed: {{low, high, scale, integer}})")
        unknown = set(spec) - {"low", "high", "scale", "integer"}
        if unknown:
            raise ConfigError(f"{key}: unknown key {sorted(unknown)[0]!r} (valid keys: low, high, scale, integer)")
        low = _coerce(f"{key}.low", spec.get("low"), float)
        high = _coerce(f"{key}.high", spec.get("high"), float)
        scale = _coerce(f"{key}.scale", spec.get("scale", "log"), Literal["log", "linear"])
        integer = _coerce(f"{key}.integer", spec.get("integer", False), bool)
        if not low < high:
            raise ConfigError(f"{key}: low {low!r} must be below high {high!r}")
        if scale == "log" and low <= 0:
            raise ConfigError(f"{key}.low: {low!r} is not allowed on a log scale (allowed: > 0)")
        return cls(low, high, scale, integer)


@dataclass
class CurriculumConfig:
    """A curriculum teacher choosing the params of every episode of a parameterized env."""

    teacher: Any = setting({"name": "alp_gmm"}, "Teacher; keys depend on curriculum.teacher.name.",
                           registry="teachers")
    test_set: Any = setting("env", "Test tasks for curriculum/mastered: 'env' (the env's own test_set()), "
                            "a list of param rows, or null (none).")
    mastered_return: float | None = setting(None, "Return at or above which a test task counts as mastered "
                                            "(null: the env's mastered_return).")
    density_every: int = setting(10_000, "Env steps between teacher metrics and density images in TensorBoard "
                                 "(0: never).", low=0)
    seed: int | None = setting(None, "Seed of the teacher's generator (null: run.seed).", low=0)

    def validate(self, prefix: str) -> None:
        """test_set is 'env', null or a list of rows."""
        if not (self.test_set is None or self.test_set == "env" or isinstance(self.test_set, list)):
            raise ConfigError(f"{prefix}test_set: {self.test_set!r} is not allowed "
                              "(allowed: 'env', null, or a list of param rows)")


@dataclass
class Config:
    """A whole experiment: one section per part."""

    run: RunConfig = setting(RunConfig(), "Run settings.")
    env: EnvConfig = setting(EnvConfig(), "Environment settings.")
    agent: Any = setting({"name": "ppo"}, "Agent settings; keys depend on agent.name.", registry="agents")
    pbt: PBTConfig | None = setting(None, "Population Based Training (`lifelong pbt`); null for a single run.")
    curriculum: CurriculumConfig | None = setting(None, "Curriculum teacher over a parameterized env; null for none.")


# ------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(tp))
    return {bool: "bool", int: "int", float: "float", str: "str", dict: "mapping", list: "list"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against type ``tp``; return it (ints widen to float). Raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: {value!r} is not allowed (expected {_type_name(tp)})")
    if origin is Literal:
        allowed = list(typing.get_args(tp))
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{key}: {value!r} is not allowed{hint} (allowed: {', '.join(map(str, allowed))})")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not a list (expected {_type_name(tp)})")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a bool (expected true or false)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: {value!r} is not an int")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {value!r} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} is not a mapping")
        return dict(value)
    raise ConfigError(f"{key}: unsupported schema type {tp!r}")


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high, low_open = meta.get("low"), meta.get("high"), meta.get("low_open")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        bracket = "(" if low_open else "["
        raise ConfigError(f"{key}: {value!r} is out of range (allowed: {bracket}{lo}, {hi}])")


def _schema_for(registry_name: str, key: str, raw: Any) -> type:
    """The config dataclass of the part named by ``raw['name']`` in registry ``registry_name``."""
    from lifelong import registry as reg

    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: {raw!r} is not a mapping")
    if "name" not in raw:
        raise ConfigError(f"{key}.name: missing (allowed: {', '.join(reg.REGISTRIES[registry_name].names())})")
    table = reg.REGISTRIES[registry_name]
    name = raw["name"]
    if not isinstance(name, str) or name not in table:
        raise ConfigError(reg.unknown_choice_message(f"{key}.name", name, table.names()))
    schema = table.get(name).config
    if schema is None:
        raise ConfigError(f"{key}.name: {name!r} takes no settings section")
    return schema


def _optional_dataclass(tp: Any) -> type | None:
    """The dataclass of an ``X | None`` section type, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def build(schema: type, raw: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``schema`` from a plain mapping, validating every key and value."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {raw!r} is not a mapping")
    fields = {_yaml_key(f): f for f in dataclasses.fields(schema) if f.init}
    for k in raw:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{prefix}{k}: unknown key{hint} (valid keys: {', '.join(fields)})")
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for ykey, f in fields.items():
        key = f"{prefix}{ykey}"
        tp = hints[f.name]
        sub_registry = f.metadata.get("registry")
        if ykey not in raw:
            if sub_registry and tp is Any:
                default = f.default_factory() if f.default_factory is not MISSING else f.default
                if isinstance(default, dict):
                    kwargs[f.name] = build(_schema_for(sub_registry, key, default), default, key + ".")
                    continue
            continue  # dataclass default
        value = raw[ykey]
        section = _optional_dataclass(tp)
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build(tp, value, key + ".")
        elif section is not None:
            kwargs[f.name] = None if value is None else build(section, value, key + ".")
        elif sub_registry and tp is Any:
            kwargs[f.name] = build(_schema_for(sub_registry, key, value), value, key + ".")
        else:
            value = _coerce(key, value, tp)
            _check_range(key, value, f.metadata)
            if sub_registry and isinstance(value, str):
                from lifelong import registry as reg

                if value not in reg.REGISTRIES[sub_registry]:
                    raise ConfigError(reg.unknown_choice_message(key, value, reg.REGISTRIES[sub_registry].names()))
            kwargs[f.name] = value
    obj = schema(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain containers with YAML key spellings (the resolved config)."""
    if dataclasses.is_dataclass(obj):
        return {_yaml_key(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# ------------------------------------------------------------------ overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value (never evaluated as code)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. agent.lr=3e-4")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key part in {key!r}")
    try:
        value = yaml.load(value_text, Loader=_LOADER) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return key.split("."), value


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    """Set ``raw[path[0]][path[1]]... = value``, creating mappings on the way."""
    node = raw
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path[: i + 1])}: {nxt!r} is not a section, cannot set {'.'.join(path)}")
        node = nxt
    node[path[-1]] = value


def _yaml_float_loader() -> type:
    """A safe YAML loader that also reads 3e-4 style numbers as floats."""

    class Loader(yaml.SafeLoader):
        pass

    import re

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+][0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


_LOADER = _yaml_float_loader()


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (safe loader, 1e-3 read as a float)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (see `lifelong list configs`)")
    with open(path) as f:
        data = yaml.load(f, Loader=_LOADER)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: top level must be a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML preset (or the defaults), apply ``key=value`` overrides, validate, return it."""
    raw = read_yaml(path) if path is not None else {}
    for text in overrides:
        apply_override(raw, *parse_override(text))
    return _cross_check(build(Config, raw))


def _cross_check(cfg: "Config") -> "Config":
    """Checks that span sections (e.g. a minibatch larger than the rollout): ``agent.check(cfg)``."""
    check = getattr(cfg.agent, "check", None)
    if callable(check):
        check(cfg)
    if cfg.curriculum is not None and cfg.curriculum.teacher.name == "plr" and cfg.agent.name != "ppo":
        raise ConfigError(f"curriculum.teacher.name: 'plr' scores episodes by their GAE advantages, which "
                          f"agent.name={cfg.agent.name!r} does not compute (allowed with it: random, alp_gmm, "
                          "covar_gmm, riac)")
    if cfg.pbt is not None:
        raw = to_dict(cfg)
        for key, spec in cfg.pbt.hyperparams.items():
            prior = HyperparamPrior.from_config(f"pbt.hyperparams.{key}", spec)
            trial = copy.deepcopy(raw)
            trial["pbt"] = None
            try:
                apply_override(trial, key.split("."), int(prior.low) if prior.integer else prior.low)
                build(Config, trial)
            except ConfigError as e:
                raise ConfigError(f"pbt.hyperparams.{key}: not a numeric config key ({e})") from e
    return cfg


def config_from_dict(raw: dict) -> Config:
    """Validate a plain mapping (e.g. a saved resolved config) into a ``Config``."""
    return _cross_check(build(Config, copy.deepcopy(raw)))


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(schema: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) rows for every key of ``schema``, nested sections flattened."""
    rows = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{_yaml_key(f)}"
        tp = hints[f.name]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key + "."))
            continue
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
    return rows
