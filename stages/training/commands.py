"""The ``vestwatch train`` and ``vestwatch val`` subcommands (registered as entry points)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("vestwatch")

DEFAULT_DATA = Path(__file__).parent / "data" / "construction-site-safety.yaml"


def run_train(args: argparse.Namespace) -> int:
    from stages.training.train import TrainConfig, train

    if args.time is not None and args.time <= 0:
        log.error("--time: must be more than 0 minutes, got %g", args.time)
        return 2
    if args.resume:
        train(TrainConfig(data="", epochs=args.epochs or 0, time_minutes=args.time), resume=args.resume)
        return 0
    config = TrainConfig(
        data=str(args.data),
        cfg=args.cfg,
        img_size=args.img,
        epochs=args.epochs or 100,
        batch=args.batch,
        device=args.device,
        workers=args.workers,
        out=str(args.out),
        seed=args.seed,
        data_root=args.data_root,
        weights=str(args.weights) if args.weights else None,
        max_train_images=args.max_train_images,
        max_val_images=args.max_val_images,
        cache=args.cache,
        time_minutes=args.time,
    )
    try:
        train(config)
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        return 2
    return 0


def add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a detector (YOLOv7 recipe) on a labelled dataset")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="our data config YAML (with a class map) or a YOLO dataset folder / data.yaml",
    )
    parser.add_argument("--data-root", help="the dataset folder, overriding the data config's root")
    parser.add_argument("--cfg", default="yolov7-tiny", help="model cfg: yolov7-tiny, yolov7 or a YAML path")
    parser.add_argument("--img", type=int, default=640, help="training image size")
    parser.add_argument("--epochs", type=int, help="epochs (default 100; with --resume: extend to this many)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=4, help="data loader processes")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weights", type=Path, help="start from these weights (official YOLOv7 .pt or ours), not scratch"
    )
    parser.add_argument("--resume", type=Path, help="a run's state.pt: continue that run")
    parser.add_argument(
        "--cache", action="store_true", help="decode the training images once into RAM (3.2 GB for 2605 at 640)"
    )
    parser.add_argument(
        "--time",
        type=float,
        metavar="MINUTES",
        help="end within this wall time: the epochs are sized from the first one's duration (--epochs is ignored)",
    )
    parser.add_argument("--max-train-images", type=int, help="use only the first N training images (smoke tests)")
    parser.add_argument("--max-val-images", type=int, help="use only the first N validation images")
    parser.set_defaults(run=run_train)


def run_val(args: argparse.Namespace) -> int:
    from stages.detector.detector import Thresholds, load_detector
    from stages.training.data import DataConfig
    from stages.training.val import VAL_CONF, VAL_IOU, VAL_MAX_DET, evaluate, report, save_results

    try:
        data = DataConfig.load(args.data, args.data_root)
        images, labels = [], []
        for split in args.split:
            split_images, split_labels = data.split(split)
            images += split_images
            labels += split_labels
        detector = load_detector(
            args.weights, args.device, args.img, Thresholds(VAL_CONF, VAL_IOU, max_det=VAL_MAX_DET)
        )
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        return 2
    evaluation = evaluate(detector, images, labels, data.names, args.batch)
    summary = evaluation.summary()
    save_results(evaluation, summary, args.out)
    print(f"{args.weights} on {'+'.join(args.split)} ({len(images)} images), {args.img}px, {detector.device}")
    print(report(summary))
    print(f"plots and metrics.json in {args.out}")
    return 0


def add_val(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("val", help="mAP, precision and recall per class on a dataset split")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--data-root")
    parser.add_argument("--split", nargs="+", default=["test"], help="one or more splits, e.g. val test")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/val"))
    parser.set_defaults(run=run_val)


def run_dataset_export(args: argparse.Namespace) -> int:
    from datetime import datetime

    from pipeline.settings import ConfigError, load_settings
    from stages.commands.run import config_path
    from stages.config import Settings
    from stages.training.site import export

    try:
        since = datetime.strptime(args.since, "%Y-%m-%d").timestamp()
    except ValueError:
        log.error("--since %r: say a day, YYYY-MM-DD", args.since)
        return 2
    try:
        settings = load_settings(Settings, config_path(args))
        if not settings.events_db.is_file():
            raise ConfigError(f"{settings.events_db}: no events database (has the daemon run with this config?)")
        done = export(settings, since, args.out)
    except (ConfigError, OSError) as error:
        log.error("%s", error)
        return 2
    print(f"{len(done.rows) - done.missed} pictures and {done.missed} to label by hand in {args.out} "
          f"(train with --data {args.out / 'site.yaml'})")  # fmt: skip
    return 0


def add_dataset(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="the site's own dataset from the reviewers' verdicts")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    exporting = actions.add_parser(
        "export", help="confirmed violations, false alarms, samples, missed ones: YOLO layout"
    )
    exporting.add_argument("-c", "--config", type=Path, help="the daemon's config file (where its recordings are)")
    exporting.add_argument("--since", required=True, help="from this day on, YYYY-MM-DD")
    exporting.add_argument("--out", type=Path, required=True, help="the dataset folder (site.yaml goes in it)")
    exporting.set_defaults(run=run_dataset_export)


def run_model(args: argparse.Namespace) -> int:
    from pipeline.settings import ConfigError
    from stages.commands.run import config_path
    from stages.training.promote import Judging, promote, rollback

    config = config_path(args)
    if config is None:
        log.error("say the daemon's config file (-c): its detector.weights is what changes")
        return 2
    try:
        if args.action == "rollback":
            print(rollback(config))
            return 0
        judging = Judging(args.data, args.public, args.margin, args.img, args.device, args.public_images,
                          args.min_val_images)  # fmt: skip
        done, said = promote(config, args.weights, judging)
    except (ConfigError, OSError, ValueError) as error:
        log.error("%s", error)
        return 2
    print(said)
    return 0 if done else 1


def add_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="swap the daemon's weights for a better fine-tune, or roll back")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    promoting = actions.add_parser("promote", help="only if better on the site split and not worse on the public one")
    promoting.add_argument("weights", type=Path, help="the fine-tuned weights (a run's best.safetensors)")
    promoting.add_argument("--data", type=Path, required=True, help="the site dataset's site.yaml (its val split)")
    promoting.add_argument("--public", type=Path, default=DEFAULT_DATA, help="the public dataset (its test split)")
    promoting.add_argument("--public-images", type=int, help="only the first N public test images (quicker)")
    promoting.add_argument("--margin", type=float, default=0.01, help="how much worse on the public split is allowed")
    promoting.add_argument("--min-val-images", type=int, default=20, help="refuse to judge on fewer site images")
    promoting.add_argument("--img", type=int, default=640)
    promoting.add_argument("--device", default="auto")
    rolling = actions.add_parser("rollback", help="put back the weights the last promotion replaced")
    for action in (promoting, rolling):
        action.add_argument("-c", "--config", type=Path, help="the daemon's config file")
        action.set_defaults(run=run_model)
