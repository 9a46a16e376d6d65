import pytest
import torch

from stages.detector.model import Model
from tests.conftest import make_model


@pytest.mark.parametrize(("cfg", "params"), [("yolov7-tiny", 6_228_762), ("yolov7", 37_622_682)])
def test_cfg_builds_the_official_architecture(cfg: str, params: int) -> None:
    # the parameter counts the official models/yolo.py reports for these cfgs at 80 classes
    model = Model(cfg, nc=80)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


def test_yolov7x_matches_the_papers_size() -> None:
    model = Model("yolov7x", nc=80)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 71.3  # the YOLOv7 paper's figure
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 128, 128)).shape == (1, (16 * 16 + 8 * 8 + 4 * 4) * 3, 85)


def test_eval_output_is_decoded_grid_layout() -> None:
    model = make_model().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 320, 256))
    cells = (40 * 32 + 20 * 16 + 10 * 8) * 3
    assert out.shape == (2, cells, 5 + 3)
    assert out[..., 4:].min() >= 0 and out[..., 4:].max() <= 1  # sigmoid scores


@pytest.mark.parametrize("cfg", ["yolov7-tiny", "yolov7"])
def test_fuse_keeps_outputs(cfg: str) -> None:
    """BatchNorm, RepConv and implicit folding must not change what the model predicts."""
    model = make_model(cfg).double()  # float64, so that only a wrong fold can make a difference
    x = torch.rand(1, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        after = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)


def test_unsupported_cfg_module_is_named() -> None:
    cfg = {"nc": 1, "anchors": [[10, 13, 16, 30, 33, 23]], "backbone": [[-1, 1, "ReOrg", []]], "head": []}
    with pytest.raises(ValueError, match="ReOrg"):
        Model(cfg)


@pytest.mark.parametrize("expression", ["__import__('os').system('true')", "nn.Module.__subclasses__()"])
def test_cfg_expressions_outside_the_table_are_refused(expression: str) -> None:
    cfg = {
        "nc": 1,
        "anchors": [[10, 13, 16, 30, 33, 23]],
        "backbone": [[-1, 1, "Conv", [8, 3, 1, None, 1, expression]]],
        "head": [],
    }
    with pytest.raises(ValueError, match="not a supported expression"):
        Model(cfg)
