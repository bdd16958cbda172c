import re

import numpy as np
import pytest
from matplotlib.image import imread

from sim.plots import DPI, plot_activation_maps, plot_layer_chart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TAB_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255
TAB_ORANGE = np.array([0xFF, 0x7F, 0x0E]) / 255


def read_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    return imread(path)[..., :3]


def count_color(pixels, color, tolerance=0.02):
    return int(np.all(np.abs(pixels - color) < tolerance, axis=-1).sum())


def report(utilizations=(0.5, 0.9, 0.25)):
    layers = [{"name": f"layer{i}", "op": "Conv", "cycles": 1000 * (i + 1), "macs": 4096 * (i + 1),
               "mac_utilization": u} for i, u in enumerate(utilizations)]
    return {"layers": layers, "total": {"cycles": sum(l["cycles"] for l in layers),
                                        "macs": sum(l["macs"] for l in layers)}}


@pytest.mark.parametrize("channels, image_shape", [(1, None), (5, (8, 8)), (16, (1, 8, 8)),
                                                   (20, (3, 32, 32))])
def test_activation_maps_written(tmp_path, channels, image_shape):
    rng = np.random.default_rng(channels)
    maps = rng.integers(-128, 128, (channels, 8, 8), dtype=np.int8)
    image = None if image_shape is None else rng.random(image_shape)
    path = plot_activation_maps(maps, tmp_path / "sub" / "maps.png", image=image, title="conv1")
    assert path == tmp_path / "sub" / "maps.png"
    pixels = read_png(path)
    height, width = pixels.shape[:2]
    assert height >= DPI and width >= DPI, f"image too small: {width}x{height}"
    # Random maps drawn with nearest interpolation give many distinct gray levels.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def test_activation_maps_grid_grows_with_channels(tmp_path):
    small = read_png(plot_activation_maps(np.ones((4, 6, 6)), tmp_path / "4.png"))
    large = read_png(plot_activation_maps(np.ones((32, 6, 6)), tmp_path / "32.png"))
    assert large.shape[0] > small.shape[0] and large.shape[1] > small.shape[1]


def test_activation_maps_show_one_bright_pixel(tmp_path):
    maps = np.zeros((2, 4, 4))
    black = np.zeros(3)
    dark = count_color(read_png(plot_activation_maps(maps, tmp_path / "dark.png")), black, 0.01)
    maps[1, 2, 3] = 1.0
    one = count_color(read_png(plot_activation_maps(maps, tmp_path / "one.png")), black, 0.01)
    # One of the 32 activations turned white: about 1/32 of the black area is gone.
    assert dark * (1 - 2 / 32) < one < dark * (1 - 0.5 / 32), (dark, one)


@pytest.mark.parametrize("shape", [(8, 8), (1, 2, 8, 8), (0, 8, 8), (4, 0, 8)])
def test_activation_maps_reject_shape(tmp_path, shape):
    with pytest.raises(ValueError, match=re.escape(
            f"maps must have shape [C, H, W] with no empty axis, not {list(shape)}")):
        plot_activation_maps(np.zeros(shape), tmp_path / "x.png")


def test_activation_maps_reject_labels_and_image(tmp_path):
    with pytest.raises(ValueError, match=re.escape("labels must give one caption per map (3), not 2")):
        plot_activation_maps(np.zeros((3, 4, 4)), tmp_path / "x.png", labels=["a", "b"])
    with pytest.raises(ValueError, match=re.escape(
            "image must have shape [H, W], [1, H, W] or [3, H, W], not [2, 4, 4]")):
        plot_activation_maps(np.zeros((3, 4, 4)), tmp_path / "x.png", image=np.zeros((2, 4, 4)))


@pytest.mark.parametrize("utilizations", [(1.0, None, 0.0), tuple(np.linspace(0.1, 0.9, 12))])
def test_layer_chart_written(tmp_path, utilizations):
    path = plot_layer_chart(report(utilizations), tmp_path / "chart.png")
    pixels = read_png(path)
    assert count_color(pixels, TAB_BLUE) > 1000, "no cycle bars drawn"
    assert count_color(pixels, TAB_ORANGE) > 100, "no utilization line drawn"


def test_layer_chart_bars_scale_with_cycles(tmp_path):
    few = report()
    many = report()
    many["layers"][0]["cycles"] = 30000  # the other bars shrink relative to this one
    blue_few = count_color(read_png(plot_layer_chart(few, tmp_path / "a.png")), TAB_BLUE)
    blue_many = count_color(read_png(plot_layer_chart(many, tmp_path / "b.png")), TAB_BLUE)
    assert blue_few != blue_many


@pytest.mark.parametrize("bad, message", [
    ({}, "report must be a dict with a non-empty 'layers' list"),
    ({"layers": []}, "report must be a dict with a non-empty 'layers' list"),
    ({"layers": [{"name": "conv1", "op": "Conv", "cycles": 1}]},
     "report layer 0 (conv1) lacks macs, mac_utilization"),
    ({"layers": [{"name": "conv1", "op": "Conv", "cycles": 1, "macs": 1, "mac_utilization": 1.5}]},
     "report layer 0 (conv1): mac_utilization must be a fraction in [0, 1] or None, not 1.5"),
    ({"layers": [{"name": "fc", "op": "Gemm", "cycles": -1, "macs": 1, "mac_utilization": 0.5}]},
     "report layer 0 (fc): cycles must be >= 0, not -1"),
])
def test_layer_chart_rejects_report(tmp_path, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        plot_layer_chart(bad, tmp_path / "chart.png")
