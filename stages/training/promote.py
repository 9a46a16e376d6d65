"""``vestwatch model promote`` and ``rollback``: the daemon's weights swapped for a fine-tuned model only
when it does better on the site's held-out split and no worse, beyond a margin, on the public test split.

A promoted model is copied into ``<recordings>/models/`` (the service writes there, and it outlives the
run folder it was trained in), the config file's ``detector.weights`` is changed to it (``tomlkit``:
the rest of the file as it was) and the daemon told to reload, which loads and checks the model before
it swaps. ``models/history.jsonl`` keeps each swap with both models' scores: ``rollback`` puts back the
weights the last promotion replaced. Scores are the training recipe's fitness (0.1 mAP50 + 0.9
mAP50-95), at the validation thresholds.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tomlkit import TOMLDocument

from pipeline.messages import ControlRequest, MessageError
from pipeline.rundir import daemon_running
from pipeline.settings import ConfigError, load_settings
from stages.commands.clients import request
from stages.commands.run import check_candidate
from stages.config import Settings
from stages.config.editing import rewrite_config

log = logging.getLogger(__name__)

HISTORY = "history.jsonl"


@dataclass
class Scores:
    site: float
    public: float


def fitness(
    weights: Path, data: Path, split: str, img: int, device: str, limit: int | None, least: int = 1
) -> tuple[float, list[str]]:
    """The model's fitness on a split (its first ``limit`` images, at least ``least``), and its class names."""
    from stages.detector.detector import Thresholds, load_detector
    from stages.training.data import DataConfig
    from stages.training.val import VAL_CONF, VAL_IOU, VAL_MAX_DET, evaluate

    dataset = DataConfig.load(data)
    images, labels = dataset.split(split)
    images, labels = images[:limit], labels[:limit]
    if len(images) < least:
        raise ValueError(f"{data}: split {split!r} has {len(images)} images, fewer than {least} to judge by "
                         "(review more events, or label the missed ones, and export again)")  # fmt: skip
    detector = load_detector(weights, device, img, Thresholds(VAL_CONF, VAL_IOU, max_det=VAL_MAX_DET))
    summary = evaluate(detector, images, labels, dataset.names).summary()
    return 0.1 * summary["map50"] + 0.9 * summary["map50_95"], list(detector.names)


def models_folder(settings: Settings) -> Path:
    return settings.recordings_dir / "models"


def set_weights(config: Path, weights: Path) -> None:
    """``detector.weights`` in the config file, the file checked as a reload will check it."""

    def edit(document: TOMLDocument) -> None:
        document.setdefault("detector", {})["weights"] = str(weights)

    rewrite_config(config, edit, check_candidate)


def reload_daemon(settings: Settings) -> tuple[bool, str]:
    """Ask the running daemon to reload; False only when it answered and refused, and what happened."""
    endpoint = settings.control_endpoint
    if endpoint.address.startswith("ipc://") and not daemon_running(settings.runtime_dir):
        return True, "the daemon is not running: it loads the new weights when it starts"
    try:
        reply = request(endpoint, ControlRequest("reload", {}), settings.control_keys, 120.0)
    except (TimeoutError, MessageError, OSError):
        return True, "the daemon did not answer (not running?): it loads the new weights when it starts"
    return (True, "the daemon reloaded") if reply.ok else (False, f"the daemon refused the reload: {reply.error}")


@dataclass(frozen=True)
class Judging:
    """What a promotion is judged on: the site's held-out split (at least ``least`` images) and the
    public test split (its first ``public_limit`` images), at ``img`` pixels on ``device``."""

    site: Path
    public: Path
    margin: float
    img: int
    device: str
    public_limit: int | None
    least: int


def promote(config: Path, new: Path, judging: Judging) -> tuple[bool, str]:
    """Swap the daemon's weights for ``new`` if it is better (see the module); whether it did, and why."""
    settings = load_settings(Settings, config)
    current, new = settings.detector.weights.resolve(), new.resolve()
    if not new.is_file():
        raise ConfigError(f"{new}: no such weights file")
    img, device, site, public, margin = judging.img, judging.device, judging.site, judging.public, judging.margin
    old_site, old_names = fitness(current, site, "val", img, device, None, judging.least)
    new_site, new_names = fitness(new, site, "val", img, device, None, judging.least)
    if new_names != old_names:
        return False, f"not promoted: {new} has classes {new_names}, the daemon's model {old_names}"
    old_public, _ = fitness(current, public, "test", img, device, judging.public_limit)
    new_public, _ = fitness(new, public, "test", img, device, judging.public_limit)
    before, after = Scores(old_site, old_public), Scores(new_site, new_public)
    said = f"site {old_site:.4f} -> {new_site:.4f}, public test {old_public:.4f} -> {new_public:.4f}"
    if not new_site > old_site:
        return False, f"not promoted: no better on the site's held-out split ({said})"
    if new_public < old_public - margin:
        return False, f"not promoted: worse on the public test split by more than {margin} ({said})"
    folder = models_folder(settings).resolve()  # the daemon runs from another folder: no relative paths
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{new.stem}-{time.strftime('%Y%m%d-%H%M%S')}{new.suffix}"
    shutil.copy2(new, kept)
    set_weights(config, kept)
    reloaded, how = reload_daemon(settings)
    if not reloaded:  # the daemon runs on with the weights it had: so does its config
        set_weights(config, current)
        return False, f"not promoted: {how} ({said}); detector.weights left at {current}"
    entry = {"at": time.time(), "promoted": str(kept), "replaced": str(current), "before": asdict(before),
             "after": asdict(after)}  # fmt: skip
    with (folder / HISTORY).open("a") as history:
        history.write(json.dumps(entry) + "\n")
    return True, f"promoted {kept} ({said}); {how}"


def rollback(config: Path) -> str:
    """Put back the weights the last promotion of the current ones replaced; what happened, in words."""
    settings = load_settings(Settings, config)
    history = models_folder(settings) / HISTORY
    entries = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    current = str(settings.detector.weights.resolve())
    last = next((entry for entry in reversed(entries) if entry.get("promoted") == current), None)
    if last is None:
        raise ConfigError(f"{current} was not promoted by 'vestwatch model promote': nothing to roll back to")
    set_weights(config, Path(last["replaced"]))
    reloaded, how = reload_daemon(settings)
    if not reloaded:
        set_weights(config, Path(current))
        raise ConfigError(f"not rolled back: {how}")
    with history.open("a") as written:
        written.write(json.dumps({"at": time.time(), "rolled_back": current, "to": last["replaced"]}) + "\n")
    return f"rolled back to {last['replaced']}; {how}"
