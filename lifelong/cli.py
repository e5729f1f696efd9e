"""The ``lifelong`` command line: train, eval, list, check-env."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from lifelong.config import ConfigError, describe, load_config

PRESET_DIRS = (Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs")
LIST_KINDS = ("agents", "memory", "envs", "teachers", "world_models", "configs")


class UsageError(Exception):
    """A command-line mistake with a one-line explanation."""


def preset_paths() -> dict[str, Path]:
    """Config presets by name (``configs/<name>.yaml``), the working directory's first."""
    found: dict[str, Path] = {}
    for folder in PRESET_DIRS:
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def resolve_config_path(text: str) -> Path:
    """A config file path, or the path of the preset of that name."""
    path = Path(text)
    if path.is_file():
        return path
    presets = preset_paths()
    if text in presets:
        return presets[text]
    import difflib

    close = difflib.get_close_matches(path.stem, list(presets), n=1)
    hint = f"; did you mean preset '{close[0]}'?" if close else ""
    raise UsageError(f"config {text!r} not found{hint} (see `lifelong list configs`)")


# ------------------------------------------------------------------ commands


def cmd_train(args: argparse.Namespace) -> int:
    """Train a new run or resume one."""
    from lifelong.run import train

    if args.resume:
        if args.config and "=" not in args.config:
            raise UsageError("give either CONFIG or --resume DIR, not both")
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        results = train(resume=args.resume, overrides=overrides)
    else:
        if not args.config:
            raise UsageError("missing CONFIG (a YAML file or preset name; see `lifelong list configs`)")
        cfg = load_config(resolve_config_path(args.config), args.overrides)
        results = train(cfg, args.run_dir)
    final = results.get("final_eval") or {}
    run_dir = Path(args.resume or args.run_dir or Path("runs") / results["name"])
    print(
        f"done: {results['steps']} steps in {results['wall_time_s']:.1f}s; "
        f"eval return {final.get('mean', float('nan')):.2f} +- {final.get('std', float('nan')):.2f}\n"
        f"run dir: {run_dir}\n"
        f"watch: tensorboard --logdir {run_dir}"
    )
    return 0


def cmd_pbt(args: argparse.Namespace) -> int:
    """Train a population (or resume one) and print the best member."""
    from lifelong.population import Population

    if args.resume:
        if args.config and "=" not in args.config:
            raise UsageError("give either CONFIG or --resume DIR, not both")
        if args.config or args.overrides:
            raise UsageError("a population resumes with its saved config; overrides are not taken with --resume")
        pop = Population.resume(args.resume)
        root = Path(args.resume)
    else:
        if not args.config:
            raise UsageError("missing CONFIG (a YAML file or preset name with a pbt: section)")
        cfg = load_config(resolve_config_path(args.config), args.overrides)
        root = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.run.name
        pop = Population.create(cfg, root)
    results = pop.run()
    print(f"done: best member m{results['best_member']} score {results['best_score']:.2f} "
          f"with {results['best_hparams']}\npopulation dir: {root}\nwatch: tensorboard --logdir {root}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the newest checkpoint of a run dir, or a checkpoint file."""
    import torch

    from lifelong.evaluation import evaluate_policy
    from lifelong.run import load_trainer, write_json

    trainer, ckpt_path, payload = load_trainer(args.target)
    target = Path(args.target)
    default_out = target / "eval.json" if target.is_dir() else ckpt_path.with_suffix(".eval.json")
    out = Path(args.output) if args.output else default_out
    cfg, device = trainer.cfg, trainer.run.device
    torch.manual_seed(args.seed)
    result, env = evaluate_policy(
        trainer.agent, cfg, episodes=args.episodes, device=device, env_state=trainer.env_state(),
        deterministic=not args.stochastic, seed=args.seed,
    )
    env.close()
    record = {"checkpoint": str(ckpt_path), "step": int(payload["step"]), **result}
    write_json(out, record)
    print(f"eval {ckpt_path} (step {record['step']}): return {result['mean']:.2f} +- {result['std']:.2f} "
          f"over {result['episodes']} episodes -> {out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print registered parts and config presets."""
    from lifelong.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(LIST_KINDS)
    for kind in kinds:
        print(f"{kind}:")
        if kind == "configs":
            for name, path in preset_paths().items():
                print(f"  {name:<28} {path}")
            continue
        entries = REGISTRIES[kind].entries()
        if not entries:
            print("  (none registered yet)")
        for entry in entries:
            print(f"  {entry.name:<28} {entry.summary}")
    return 0


def cmd_check_env(args: argparse.Namespace) -> int:
    """Validate a user's Gymnasium env and print exactly what is wrong."""
    from lifelong.envs.check import check_env

    problems = check_env(args.target, kwargs=_kwargs(args.kwarg), import_module=args.import_module)
    if not problems:
        print(f"{args.target}: OK (usable with env.backend=gymnasium)")
        return 0
    print(f"{args.target}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  - {problem}")
    return 1


def cmd_config(args: argparse.Namespace) -> int:
    """Print every config key with its type, default and docstring."""
    from lifelong.config import Config, RunConfig, EnvConfig
    from lifelong.registry import AGENTS, MEMORY

    sections = [("run.", RunConfig), ("env.", EnvConfig)]
    sections += [(f"agent[{e.name}].", e.config) for e in AGENTS.entries() if e.config]
    sections += [(f"memory[{e.name}].", e.config) for e in MEMORY.entries() if e.config]
    for prefix, schema in sections:
        for key, tp, default, doc in describe(schema, prefix):
            print(f"{key:<36} {tp:<22} {default!r:<16} {doc}")
    del Config
    return 0


def _kwargs(pairs: Sequence[str]) -> dict:
    from lifelong.config import parse_override

    out = {}
    for pair in pairs:
        path, value = parse_override(pair)
        out[".".join(path)] = value
    return out


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="lifelong", description="Train RL agents that remember and keep learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a new run (CONFIG [key=value ...]) or continue one (--resume DIR)")
    p.add_argument("config", nargs="?", help="YAML file or preset name")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. agent.lr=3e-4 env.num_envs=16")
    p.add_argument("--run-dir", help="run directory (default runs/<run.name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest good checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pbt", help="population based training (CONFIG with a pbt: section, or --resume DIR)")
    p.add_argument("config", nargs="?", help="YAML file or preset name")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pbt.population=8")
    p.add_argument("--run-dir", help="population directory (default runs/<run.name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the population in DIR")
    p.set_defaults(func=cmd_pbt)

    p = sub.add_parser("eval", help="evaluate a run dir or checkpoint")
    p.add_argument("target", help="run dir or checkpoint file")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the policy mode")
    p.add_argument("--output", help="JSON file (default DIR/eval.json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("list", help="list registered parts and presets")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check-env", help="validate a Gymnasium env id or module:Class")
    p.add_argument("target", help="Gymnasium id or module:Class")
    p.add_argument("--import", dest="import_module", help="module to import first (registers ids)")
    p.add_argument("--kwarg", action="append", default=[], help="constructor argument key=value (repeatable)")
    p.set_defaults(func=cmd_check_env)

    p = sub.add_parser("config", help="print every config key with its type, default and description")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lifelong`` console script."""
    from lifelong.checkpoint import CheckpointError
    from lifelong.run import DivergedError, RunDirError

    parser = build_parser()
    # Overrides may come after options (`train CONFIG --run-dir D key=value`): collect them too.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if "=" not in a or a.startswith("-")]
    if stray or (extra and args.command not in ("train", "pbt")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except (ConfigError, UsageError, RunDirError, CheckpointError, DivergedError) as e:
        print(f"lifelong {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:  # registry lookups raise KeyError with a one-line message
        print(f"lifelong {args.command}: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lifelong {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
