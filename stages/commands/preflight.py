"""Checks that need the model, made before the daemon starts a stage and before a reload is
accepted: a weights file that does not load, a device that is not there, classes the config
names that the model lacks. Without them the daemon started and its inference stage crash-looped.

The model is loaded on the CPU in a short-lived child process, so that the supervisor never
imports torch (251 MiB resident instead of 42) and the check takes no memory from the GPU that
the inference stage is using; the device itself is checked by name and presence.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.settings import ConfigError, load_settings
from stages.config import Settings


def model_problem(config: Path | None) -> str | None:
    """One line naming the field that stops the model from serving this config, or None."""
    from stages.detector.backends import resolve_device
    from stages.detector.detector import detector_from_settings

    settings = load_settings(Settings, config)
    detector_settings = settings.detector
    try:
        resolve_device(detector_settings.device)
    except ValueError as error:
        return f"detector.device: {error}"
    weights = detector_settings.weights
    if not weights.is_file():
        return f"detector.weights: {weights} not found"
    if weights.stat().st_size == 0:
        return f"detector.weights: {weights} is empty"
    try:
        detector = detector_from_settings(detector_settings.model_copy(update={"device": "cpu"}))
    except ValueError as error:
        text = _first_line(error)
        if text.startswith("detector."):
            return text
        return f"detector.weights: {text if text.startswith(str(weights)) else f'{weights}: {text}'}"
    except Exception as error:  # every loader fails on a broken file in its own way
        return f"detector.weights: {weights}: not a loadable model ({type(error).__name__}: {_first_line(error)})"
    fixed = detector.backend.fixed_shape
    if fixed and fixed != (detector_settings.img_size, detector_settings.img_size):
        return f"detector.img_size: the model takes {fixed[0]}x{fixed[1]} input, set it to match"
    required = {item for stream in settings.streams for zone in stream.zones for item in zone.require}
    for item in sorted(required):
        if item not in detector.names and f"no_{item}" not in detector.names:
            return f"streams.zones.require: the model sees neither {item!r} nor 'no_{item}' (it has {detector.names})"
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def check_model(config: Path | None) -> None:
    """ConfigError with ``model_problem``'s line, found in a child process."""
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            problem = pool.submit(model_problem, config).result()
    except ConfigError:
        raise
    except Exception as error:  # the check itself died (a loader crashed, out of memory): refuse too
        problem = f"detector: the model check failed ({type(error).__name__}: {_first_line(error)})"
    if problem:
        raise ConfigError(problem)
