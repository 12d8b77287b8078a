"""`python -m ensam_train {train,export,plot,pack,compare,average}`."""

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
    from ensam_infer.model import INFERENCE_KEYS, load_checkpoint, read_metadata, set_metadata

    src = Path(args.run_dir).expanduser() / "model.pt"
    model = load_checkpoint(src)  # proves the file loads before it replaces shipped weights
    if not model.config.trained:
        print(f"error: {src} is not marked as trained", file=sys.stderr)
        return 1
    out = Path(args.out)
    # The inference settings validated for the weights being replaced carry over unless
    # the command gives new ones; a new file keeps the run's own (its --init weights').
    keep = read_metadata(out) if out.is_file() else {}
    settings = {k: keep.get(k, model.metadata.get(k)) for k in INFERENCE_KEYS}
    if args.crop is not None:
        settings["inference_crop"] = args.crop
    if args.max_voxels is not None:
        settings["inference_max_voxels"] = args.max_voxels
    with atomic_path(out) as tmp:
        shutil.copyfile(src, tmp)
    meta = set_metadata(out, **settings)
    shown = ", ".join(f"{k}={meta[k]}" for k in INFERENCE_KEYS if k in meta) or "none"
    print(f"{out}: {model.metadata.get('steps')} steps; inference settings: {shown}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .train import write_plot

    print(write_plot(args.run_dir))
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from .pack import pack_training_data

    counts = pack_training_data(args.out, max_size=args.max_size)
    print(
        f"{args.out}: {counts['label_maps']} label maps, {counts['real_cases']} training cases, "
        f"{counts['bytes'] / 2**20:.1f} MiB"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import repeated_report, report

    pairs = [(args.base, args.other)] + [tuple(pair) for pair in args.repeat or []]
    try:
        first = report(args.base, args.other, show=args.show)
        repeated = repeated_report(pairs, show=args.show) if args.repeat else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(first)
    if repeated is not None:
        print(repeated)
    return 0


def _cmd_what_if(args: argparse.Namespace) -> int:
    from ensam_infer.rules import PromptRules

    from .what_if import what_if

    toggles = [t.strip() for t in args.toggle.split(",") if t.strip()]
    for folder in (args.images, args.labels):
        if not Path(folder).is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
    try:
        rules = PromptRules.parse(args.rules) if args.rules else None  # None: as evaluate
        what_if(
            args.images,
            args.labels,
            args.out,
            toggles,
            rules,
            args.weights,
            args.device,
            args.cases,
            args.click_only,
        )
    except (ValueError, FileNotFoundError) as exc:  # an unknown rule, no weights
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from .average import write_average

    paths = sorted(Path(args.snapshots).expanduser().glob("step_*.pt"))
    if args.first is not None:
        paths = [p for p in paths if int(p.stem.split("_")[1]) >= args.first]
    if not paths:
        print(f"error: no snapshots in {args.snapshots}", file=sys.stderr)
        return 1
    write_average(paths, args.out)
    print(f"{args.out}: the mean of {len(paths)} snapshots ({paths[0].name} .. {paths[-1].name})")
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
    p.add_argument("--crop", choices=["union", "object"], default=None, help="recommend")
    p.add_argument("--max-voxels", type=int, default=None, help="recommended size cap")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("pack", help="compact training data for a machine without ../shared")
    p.add_argument("--out", required=True, help="folder to train from with ENSAM_DATA=OUT")
    p.add_argument("--max-size", type=int, default=96, help="the config's data.max_size")
    p.set_defaults(func=_cmd_pack)
    p = sub.add_parser("plot", help="redraw a run's plot.png")
    p.add_argument("--run-dir", required=True)
    p.set_defaults(func=_cmd_plot)
    p = sub.add_parser("compare", help="paired comparison of two validation runs")
    p.add_argument("base", help="the baseline's ensam_per_case.csv")
    p.add_argument("other", help="the candidate's ensam_per_case.csv")
    p.add_argument("--show", type=int, default=3, help="cases listed at each end")
    p.add_argument(
        "--repeat",
        nargs=2,
        action="append",
        metavar=("BASE", "OTHER"),
        help="the same comparison in an equivalent setting (another mirror axis, say); "
        "repeatable: per-case changes are then also averaged over all the pairs",
    )
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser(
        "what-if", help="each step also answered with a rule switched: the rule's own effect"
    )
    p.add_argument("--images", required=True, help="folder of case npz files")
    p.add_argument("--labels", required=True, help="folder of ground-truth npz files (gts)")
    p.add_argument("--out", required=True, help="folder for the per-case CSVs")
    p.add_argument("--toggle", required=True, help="comma-separated rules to switch, e.g. clicks")
    p.add_argument(
        "--rules", default=None, help="the trajectory's rules (default: ENSAM_RULES, as evaluate)"
    )
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--click-only", action="store_true", help="the cases without their boxes")
    p.set_defaults(func=_cmd_what_if)
    p = sub.add_parser("average", help="average a run's weight snapshots (SWA)")
    p.add_argument("snapshots", help="a run's snapshots/ folder")
    p.add_argument("--out", required=True, help="the averaged weights file")
    p.add_argument("--first", type=int, default=None, help="leave out snapshots before this step")
    p.set_defaults(func=_cmd_average)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
