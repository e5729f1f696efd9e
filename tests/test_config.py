"""Config schema: presets load, overrides apply, bad keys and values give one-line errors."""

import pytest

from lifelong.config import ConfigError, config_from_dict, dump_yaml, load_config, parse_override, to_dict

PRESET = "configs/ppo_cartpole.yaml"


def test_preset_and_overrides_resolve():
    cfg = load_config(PRESET, ["agent.lr=3e-4", "env.num_envs=16", "run.name=x", "agent.memory.hidden=[32]"])
    assert cfg.agent.lr == pytest.approx(3e-4)
    assert isinstance(cfg.agent.lr, float)
    assert cfg.env.num_envs == 16
    assert cfg.run.name == "x"
    assert cfg.agent.memory.hidden == [32]
    assert cfg.agent.epochs == 20  # from the preset
    assert cfg.agent.target_kl is None  # schema default


def test_resolved_config_round_trips():
    cfg = load_config(PRESET, ["env.import=json"])
    raw = to_dict(cfg)
    assert raw["env"]["import"] == "json"  # YAML spelling of a reserved word
    assert config_from_dict(raw) == cfg
    assert "import: json" in dump_yaml(cfg)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("agent.lrr=1e-3", "agent.lrr: unknown key; did you mean 'agent.lr'?"),
        ("env.num_env=4", "did you mean 'env.num_envs'?"),
        ("agent.memory.hiden=[8]", "did you mean 'agent.memory.hidden'?"),
        ("agent.lr=fast", "agent.lr: 'fast' is not a number"),
        ("run.seed=1.5", "run.seed: 1.5 is not an int"),
        ("run.progress=3", "run.progress: 3 is not a bool"),
        ("agent.lr=-1", "agent.lr: -1.0 is out of range (allowed: (0.0, inf])"),
        ("agent.gamma=1.5", "agent.gamma: 1.5 is out of range (allowed: [0.0, 1.0])"),
        ("env.num_envs=0", "env.num_envs: 0 is out of range"),
        ("env.vectorization=asyn", "did you mean 'async'?"),
        ("env.backend=envpol", "env.backend: unknown value 'envpol'; did you mean 'envpool'?"),
        ("agent.name=ppp", "agent.name: unknown value 'ppp'; did you mean 'ppo'?"),
        ("agent.memory.name=mpl", "agent.memory.name: unknown value 'mpl'; did you mean 'mlp'?"),
        ("agent.lr=.inf", "agent.lr: inf is not a finite number"),
        ("agent.memory.hidden=[64,0]", "agent.memory.hidden: [64, 0] has a width below 1"),
        ("run.name.x=1", "run.name: 'ppo_cartpole' is not a section"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(PRESET, [override])
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_override_parsing_never_evaluates():
    assert parse_override("a.b=__import__('os')") == (["a", "b"], "__import__('os')")
    assert parse_override("a=1e-3") == (["a"], 1e-3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("agent.lr")


def test_missing_file_is_one_line():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")


@pytest.mark.parametrize("preset", sorted(p.name for p in __import__("pathlib").Path("configs").glob("*.yaml")))
def test_every_preset_loads(preset):
    cfg = load_config(f"configs/{preset}")
    assert cfg.run.name == preset.removesuffix(".yaml")  # presets name their runs after themselves
