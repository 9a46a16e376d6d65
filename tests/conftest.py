"""Shared fixtures: ffmpeg-made media, randomly initialised (never shipped) test models."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stages.config import BUNDLED_WEIGHTS
from stages.detector.checkpoints import save_weights
from stages.detector.model import Model
from tests.harness import SYSTEM_PYTHON, Daemon, RtspServer, free_port

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHIPPED = {"weights": str(BUNDLED_WEIGHTS), "img_size": 640, "conf": 0.25}  # [detector] of the shipped model
TEST_NAMES = ["vest", "no_vest", "person"]
OBJECTNESS_BIAS = 3.5  # on top of the model's prior of about -4 to -6.5


def perturb(model: Model, seed: int = 0) -> Model:
    """Make a random model behave like a trained one in the ways the tests rely on.

    BatchNorm statistics are calibrated on synthetic scenes, so that features keep
    their variance through the network and scores depend on the image (a fresh
    random network collapses to the same score everywhere). Then BatchNorm affine
    parameters and implicit layers get random values, which a wrong fusion would
    not survive, and objectness is biased so that a few dozen boxes pass conf 0.3.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batches
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
        head = model.head
        for name in ("ia", "im"):
            for implicit in getattr(head, name, []):
                implicit.implicit.add_(torch.randn(implicit.implicit.shape, generator=generator) * 0.05)
        model.train()
        for i in range(4):
            model(torch.from_numpy(scene(256, 256, seed=100 + i)).permute(2, 0, 1)[None].float() / 255)
        for conv in head.m:
            conv.bias.view(head.na, -1)[:, 4] += OBJECTNESS_BIAS
    return model.eval()


def make_model(cfg: str = "yolov7-tiny", names: list[str] = TEST_NAMES, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return perturb(Model(cfg, nc=len(names), names=names), seed)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random yolov7-tiny in our safetensors format (fp32, so backends compare exactly)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(make_model(), path, half=False)
    return path


@pytest.fixture(scope="session")
def big_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random full YOLOv7 (8x tiny's work per frame): a model too big for a 2-core CPU's cameras."""
    path = tmp_path_factory.mktemp("weights") / "big.safetensors"
    save_weights(make_model("yolov7"), path, half=True)
    return path


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if not found:
        pytest.skip("ffmpeg is not installed (deploy/setup.sh installs it)")
    return found


@pytest.fixture
def make_video(ffmpeg: str, tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name, seconds=1, fps=10, size="320x240", gop=None)``: an H.264 test-pattern clip
    (x264's defaults, B-frames included; ``gop``: a keyframe every that many frames, and only then)."""

    def make(name: str = "clip.mp4", seconds: float = 1, fps: int = 10, size: str = "320x240", gop: int = 0) -> Path:
        path = tmp_path / name
        keyframes = ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"] if gop else []
        subprocess.run(
            [
                ffmpeg,
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=size={size}:rate={fps}",
                "-t",
                str(seconds),
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                *keyframes,
                str(path),
            ],
            check=True,
        )
        return path

    return make


def scene(width: int = 640, height: int = 360, seed: int = 0) -> np.ndarray:
    """A synthetic BGR picture with shapes and texture, so that random models react to it."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 80))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x, y), (x + 40, y + 70), colour, cv2.FILLED)
    return image


@pytest.fixture
def site_footage() -> Path:
    path = SHARED / "media" / "construction-site.mp4"
    if not path.is_file():
        pytest.skip(f"real site footage not found at {path}")
    return path


@pytest.fixture(scope="session")
def gst_rtsp() -> None:
    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"], capture_output=True
    )
    if check.returncode:
        pytest.skip("GStreamer RTSP server for Debian's python3 missing (deploy/setup.sh --dev installs it)")


@pytest.fixture
def rtsp_server(gst_rtsp: None) -> Iterator[Callable[..., RtspServer]]:
    """``rtsp_server(size="320x240", fps=15)``: a started server; stopped after the test."""
    servers: list[RtspServer] = []

    def start(size: str = "320x240", fps: int = 15, port: int | None = None) -> RtspServer:
        server = RtspServer(port or free_port(), size=size, fps=fps).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def daemon(tmp_path: Path, tiny_weights: Path) -> Iterator[Callable[..., Daemon]]:
    """``daemon(streams, **sections)``: writes a config under tmp_path and starts ``vestwatch run``; a
    section is a top-level value (str), a table (dict) or an array of tables (a list of dicts: webhooks)."""
    started: list[Daemon] = []

    def start(
        streams: list[dict], publish_port: int | None = None, home: str = "", **sections: dict | str | list
    ) -> Daemon:
        """``home`` keeps a second daemon's files (config, runtime dir, recordings) apart from the first's."""
        port, http = publish_port or free_port(), f"127.0.0.1:{free_port()}"
        folder = tmp_path / home
        folder.mkdir(exist_ok=True)
        top = {
            "recordings_dir": str(folder / "recordings"),
            "runtime_dir": str(folder / "run"),
            "publish": f"pub+bind:tcp://127.0.0.1:{port}",
            "http": http,
        }
        top.update({key: value for key, value in sections.items() if isinstance(value, str)})
        lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
        arrays = {key: value for key, value in sections.items() if isinstance(value, list)}
        sections = {key: value for key, value in sections.items() if isinstance(value, dict)}
        for name, tables in [("streams", streams), *arrays.items()]:
            for table in tables:
                lines.append(f"[[{name}]]")
                lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        defaults = {
            "detector": {"weights": str(tiny_weights), "img_size": 320, "device": "cpu", "conf": 0.3},
            # a latency bound for a 2-core box that runs the suite beside the daemon (tests of it set their own)
            "pipeline": {"preprocess_workers": 1, "max_batch": 4, "stall_s": 20, "max_latency_ms": 10000},
            "recording": {"segment_s": 4},
        }
        for name in defaults.keys() | sections.keys():
            values = {**defaults.get(name, {}), **sections.get(name, {})}
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        config = folder / "site.toml"
        config.write_text("\n".join(lines) + "\n")
        process = Daemon(config)
        process.endpoint = f"tcp://127.0.0.1:{port}"
        process.http = http
        process.recordings = Path(top["recordings_dir"])
        process.runtime_dir = folder / "run"
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def toml_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return f'"{value}"'


@pytest.fixture(scope="session")
def site_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 frames (10 fps, 640x640 H.264) of real site pictures, the demo's (CC BY 4.0), on which the
    shipped model finds workers with and without vests; four zoom steps per picture."""
    from fractions import Fraction

    from stages.capture.sources.demo import demo_pictures, zoomed
    from stages.media.video import VideoWriter

    path = tmp_path_factory.mktemp("site") / "site.mp4"
    with VideoWriter(path, Fraction(10)) as writer:
        for picture in demo_pictures():
            for step in range(4):
                writer.write(zoomed(picture, step / 4))
    return path


@pytest.fixture
def scene_video(tmp_path: Path) -> Path:
    """An H.264 clip of synthetic scenes on which the test model's scores spread from ~0.1 to ~0.99."""
    from fractions import Fraction

    from stages.media.video import VideoWriter

    path = tmp_path / "scenes.mp4"
    with VideoWriter(path, Fraction(10)) as writer:
        for i in range(20):
            writer.write(scene(320, 240, seed=i % 3))
    return path


# A small synthetic YOLO dataset for the training recipe: coloured boxes whose colour is their class.
COLOURS = {0: (0, 0, 230), 1: (230, 60, 0)}  # BGR: class 0 red, class 1 blue


def write_split(root: Path, split: str, count: int, size: int = 128, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    for i in range(count):
        image = np.full((size, size, 3), 120, np.uint8)
        rows = []
        for _ in range(int(rng.integers(1, 3))):
            cls = int(rng.integers(0, 2))
            w, h = int(rng.integers(24, 48)), int(rng.integers(24, 48))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            cv2.rectangle(image, (x, y), (x + w, y + h), COLOURS[cls], cv2.FILLED)
            rows.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        cv2.imwrite(str(root / split / "images" / f"{i:03d}.png"), image)
        (root / split / "labels" / f"{i:03d}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="session")
def boxes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("boxes")
    write_split(root, "train", 8, seed=1)
    write_split(root, "valid", 4, seed=2)
    (root / "data.yaml").write_text("names: [red, blue]\ntrain: train/images\nval: valid/images\ntest: valid/images\n")
    return root
