"""`python -m ensam_train {train,export,plot}`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    overrides = json.loads(args.set) if args.set else None
    train(
        args.run_dir,
        args.config,
        overrides=overrides,
        init_weights=args.init,
        max_minutes=args.minutes,
        max_steps=args.steps,
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Copy a run's latest weights (fp16, config marked trained) to the shipping path."""
    import shutil

    from ensam_infer.atomic import atomic_path
    from ensam_infer.model import load_checkpoint

    src = Path(args.run_dir).expanduser() / "model.pt"
    model = load_checkpoint(src)  # proves the file loads before it replaces shipped weights
    if not model.config.trained:
        print(f"error: {src} is not marked as trained", file=sys.stderr)
        return 1
    with atomic_path(args.out) as tmp:
        shutil.copyfile(src, tmp)
    print(f"{args.out}: {model.metadata.get('steps')} steps")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .train import write_plot

    print(write_plot(args.run_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensam_train")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train or resume a run")
    p.add_argument("--run-dir", required=True, help="run folder (resumed if it has a checkpoint)")
    p.add_argument("--config", default=None, help="JSON config (ignored when resuming)")
    p.add_argument("--set", default=None, help='JSON overrides, e.g. \'{"train": {"lr": 1e-3}}\'')
    p.add_argument("--init", default=None, help="start from these weights (new runs only)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--steps", type=int, default=None, help="stop at this step")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("export", help="copy a run's weights to the shipped path")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", default="weights/ensam.pt")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("plot", help="redraw a run's plot.png")
    p.add_argument("--run-dir", required=True)
    p.set_defaults(func=_cmd_plot)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
