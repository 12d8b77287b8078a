"""Command line: `python -m ensam_infer {predict,segment,samples,evaluate,init-weights}`.

Imports stay inside each command: the challenge runs one process per click and counts
start-up time, so `predict` must load only what it uses."""

from __future__ import annotations

import argparse
import sys
import time


def _cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .predict import predict_folder
    from .rules import PromptRules
    from .session import EnsamSession

    inp, out = Path(args.input), Path(args.output)
    if not inp.is_dir():
        print(f"error: input folder {inp} does not exist", file=sys.stderr)
        return 2
    if out.exists() and not out.is_dir():
        print(f"error: output {out} is not a folder", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
        rules = PromptRules.parse(args.rules) if args.rules is not None else None
        session = EnsamSession(
            args.weights,
            device=args.device,
            max_voxels=args.max_voxels,
            rules=rules,
            crop=args.crop,
            tta=args.tta,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = predict_folder(inp, out, session, use_cache=not args.no_cache)
    failed = [r for r in results if not r.ok]
    if not results:
        print(f"warning: no .npz cases in {inp}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from .prompts import PromptError
    from .rules import PromptRules
    from .session import EnsamSession
    from .volumes import read_prompts, read_volume, write_mask

    t0 = time.perf_counter()
    try:
        volume = read_volume(args.image)
        objects, window = read_prompts(args.prompts, volume)
        rules = PromptRules.parse(args.rules) if args.rules is not None else None
        session = EnsamSession(args.weights, device=args.device, rules=rules, tta=args.tta)
        session.set_image(volume.array, volume.spacing_zyx, window=window)
        for obj_id, obj in objects.items():
            if obj.box is not None:
                session.add_box(obj.box, obj_id)
            for p, positive in zip(obj.points, obj.positive, strict=True):
                session.add_click(p, positive, obj_id)
        mask = session.predict()
        write_mask(args.output, mask, volume)
    except (OSError, ValueError, PromptError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import numpy as np  # loaded already by the session: no start-up cost

    voxels = np.bincount(mask.ravel(), minlength=max(objects, default=0) + 1)
    per_object = ", ".join(f"{i}: {int(voxels[i])} voxels" for i in sorted(objects))
    seconds = time.perf_counter() - t0
    print(f"{args.output}: {len(objects)} objects ({per_object}), {seconds:.2f} s")
    return 0


def _cmd_samples(args: argparse.Namespace) -> int:
    from .samples import write_samples

    for path in write_samples(args.out, seed=args.seed):
        print(path)
    return 0


def _cmd_init_weights(args: argparse.Namespace) -> int:
    import torch

    from .model import build_model, save_checkpoint

    torch.manual_seed(args.seed)
    model = build_model(args.preset)
    save_checkpoint(model, args.out, metadata={"note": "untrained, for testing the pipeline"})
    print(f"{args.out}: UNTRAINED {args.preset} checkpoint")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import os

    from .evaluation.runner import main_evaluate
    from .rules import PromptRules

    # Through the environment, so script mode's processes see them too.
    if args.max_voxels:
        os.environ["ENSAM_MAX_VOXELS"] = str(args.max_voxels)
    if args.crop:
        os.environ["ENSAM_CROP"] = args.crop
    if args.tta:
        os.environ["ENSAM_TTA"] = str(args.tta)
    if args.rules is not None:
        try:
            PromptRules.parse(args.rules)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        os.environ["ENSAM_RULES"] = args.rules

    return main_evaluate(args)


def _cmd_finetune(args: argparse.Namespace) -> int:
    import json

    from ensam_train.finetune import FinetuneError, finetune

    try:
        overrides = json.loads(args.set) if args.set else None
    except json.JSONDecodeError as exc:
        print(f"error: --set is not JSON: {exc}", file=sys.stderr)
        return 2
    try:
        finetune(
            args.data,
            args.run_dir,
            weights=args.weights,
            steps=args.steps,
            minutes=args.minutes,
            val_fraction=args.val_fraction,
            seed=args.seed,
            overrides=overrides,
            device=args.device,
        )
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume {args.run_dir}", file=sys.stderr)
        return 130
    return 0


CROP_HELP = (
    "network input region: union (one crop around every object's prompts) or object (one "
    "crop per object, at its own scale); default: the weights' recommendation"
)
RULES_HELP = (
    "prompt rules applied to every answer: default, all, none, or a comma-separated list "
    "of z_range, debris, clicks, click_grow, box_prior, click_crop, recrop, blend (see README)"
)


class _VersionAction(argparse.Action):
    """`--version`: the version is looked up only when asked (start-up time counts)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from . import version

        print(f"ensam {version()}")
        parser.exit()


TTA_HELP = "mirrored copies of each input averaged, 1 (none) to 8 (default: the weights')"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ensam_infer", description=__doc__)
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment every challenge npz in a folder")
    p.add_argument("--input", default="/workspace/inputs")
    p.add_argument("--output", default="/workspace/outputs")
    p.add_argument("--weights", default=None, help="checkpoint (default: shipped weights)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--no-cache", action="store_true", help="never reuse encoder features")
    p.add_argument("--rules", default=None, help=RULES_HELP)
    p.add_argument(
        "--max-voxels", type=int, default=None, help="network input size cap (default: weights')"
    )
    p.add_argument("--crop", choices=["union", "object"], default=None, help=CROP_HELP)
    p.add_argument("--tta", type=int, choices=range(1, 9), default=None, help=TTA_HELP)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("segment", help="segment a NIfTI/NRRD/MHA image from a prompt JSON")
    p.add_argument("--image", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--rules", default=None, help=RULES_HELP)
    p.add_argument("--tta", type=int, choices=range(1, 9), default=None, help=TTA_HELP)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("samples", help="write synthetic sample cases (imgs/ and gts/)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_samples)

    p = sub.add_parser("init-weights", help="write an UNTRAINED checkpoint (for tests)")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="ensam_tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_init_weights)

    p = sub.add_parser("evaluate", help="run the challenge's 6-step protocol and score it")
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--mode", choices=["inprocess", "script", "docker"], default="inprocess")
    p.add_argument("--image", default="ensam:latest", help="docker image for --mode docker")
    p.add_argument("--methods", default="ensam,boxfill,otsu", help="comma-separated")
    p.add_argument("--cases", default=None, help="comma-separated case names (default all)")
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--click-only", action="store_true", help="remove the boxes: click steps only")
    p.add_argument("--max-voxels", type=int, default=None, help="network input size cap")
    p.add_argument("--crop", choices=["union", "object"], default=None, help=CROP_HELP)
    p.add_argument("--tta", type=int, choices=range(1, 9), default=None, help=TTA_HELP)
    p.add_argument("--rules", default=None, help=RULES_HELP)
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any step reports an error (no output, unreadable, wrong shape or "
        "dtype, not rewritten, non-zero exit)",
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep OUT/work (each run's inputs/ and outputs/)"
    )
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("finetune", help="fine-tune on your own labelled folder (resumable)")
    p.add_argument(
        "--data", required=True, help="imagesTr/+labelsTr/, images/+labels/ or imgs/+gts/"
    )
    p.add_argument("--run-dir", required=True, help="run folder (re-run the command to resume)")
    p.add_argument("--weights", default=None, help="starting weights (default: shipped weights)")
    p.add_argument("--steps", type=int, default=300, help="train up to this step (default 300)")
    p.add_argument("--minutes", type=float, default=None, help="stop training after this time")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of cases held out")
    p.add_argument("--seed", type=int, default=0, help="held-out split and example stream")
    p.add_argument("--device", default="auto", help="device of the evaluations")
    p.add_argument(
        "--set", default=None, help='JSON config overrides, e.g. \'{"train": {"lr": 1e-4}}\''
    )
    p.set_defaults(func=_cmd_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
