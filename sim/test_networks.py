"""Whole networks on the simulated RTL: the lecture's ConvNetJS CIFAR-10 net and the digits CNN.

``convcore run --backend icarus|verilator`` runs every layer of each network on the engine in
one simulator launch (the fc layers as convs whose kernel covers their input); the output must
be identical (``==``) to ``--backend model``, every layer's output must equal the golden model
(``--check``), and the CIFAR-10 net's integer scores must be within one output step of the
ONNX reference and of onnxruntime (:mod:`model.oracle`).

The hardware configuration :data:`sim.testing.NETWORK_HW` is the smallest engine that fits both
networks (32x32 inputs, up to 20 channels, 5x5 kernels, the CIFAR fc layer as a 4x4 conv over
20 channels): a 4 x 4 MAC array keeps Icarus fast enough for one CIFAR image (about 275,000
cycles at about 3,000 cycles/s: 1.5 minutes on an idle core, the slowest test of the file;
larger arrays need fewer cycles but Icarus simulates each one more slowly), Verilator runs more
images. Its builds are cached under ``build/sim/`` and shared with :mod:`sim.test_demo`; the first
Verilator build takes about 1.5 minutes, Icarus's seconds.
"""

import json
import re

import numpy as np
import pytest

from examples.cifar import random_images
from examples.digits import MODEL_PATH as DIGITS_PATH
from examples.digits import load_test_set
from model.network import DenseLayer
from model.oracle import run_onnxruntime, run_reference
from model.quant import dequantize, quantize
from sim import cli
from sim.bench import cifar_net
from sim.onnx_import import load_network
from sim.testing import NETWORK_HW, NETWORK_HW_JSON

SIMS = ("icarus", "verilator")
#: CIFAR-10 images per simulator: Icarus simulates this engine at about 3,000 cycles/s.
CIFAR_IMAGES = {"icarus": 1, "verilator": 4}
#: Held-out digits per simulator.
DIGITS = {"icarus": 6, "verilator": 40}
#: The committed digits net classifies 97.8% of the held-out digits; a few of the first ones
#: may be wrong, but not many.
DIGITS_MIN_ACCURACY = 0.8
CIFAR_SEED = 0
IMAGE_SEED = 11


def run(args, capsys):
    """In-process ``convcore ARGS``: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def run_both(model, x, sim, tmp_path, capsys):
    """``convcore run`` on ``--backend model`` and on ``sim`` (with ``--check``):
    (golden output, hardware output, hardware report)."""
    inputs = tmp_path / "x.npy"
    np.save(inputs, x)
    outputs = {}
    for backend in ("model", sim):
        out, report = tmp_path / f"{backend}.npy", tmp_path / f"{backend}.json"
        extra = ["--hw-config", NETWORK_HW_JSON, "--check", "--report", report] \
            if backend == sim else []
        status, stdout, err = run(["run", model, "--input", inputs, "--output", out,
                                   "--backend", backend, *extra], capsys)
        assert status == 0 and err == "", err
        outputs[backend] = np.load(out)
    assert "check: every layer's output equals the golden model" in stdout
    return outputs["model"], outputs[sim], json.loads(report.read_text())


def assert_all_layers_on(report, net, sim, batch):
    """Every layer, the dense one included, ran on the simulated engine for every sample."""
    assert [r["name"] for r in report["layers"]] == [layer.name for layer in net.layers]
    for record, layer in zip(report["layers"], net.layers):
        assert record["ran_on"] == sim, (layer.name, record.get("note"))
        assert len(record["cycles_per_sample"]) == batch
        assert record["cycles"] == sum(record["cycles_per_sample"]) >= record["ideal_cycles"]
        if isinstance(layer, DenseLayer):
            # Several samples a pass (sim.compiler.Folded) when the batch has several.
            note = "dense as a conv whose kernel covers the input"
            assert record["note"] == note if batch == 1 else \
                re.fullmatch(re.escape(note) + r"; \d+ samples a pass", record["note"])
    assert report["hardware"]["pe"] == NETWORK_HW["pe"] \
        and report["hardware"]["simd"] == NETWORK_HW["simd"]


def integer_output(net, y):
    """The network's int8 scores behind a dequantized float output (exact: the float values
    are (q - zero_point) * scale)."""
    q = quantize(y, np.float32(net.output_scale), net.output_zero_point, net.layers[-1].out_dtype)
    assert np.array_equal(dequantize(q, np.float32(net.output_scale), net.output_zero_point), y)
    return q.astype(np.int32)


@pytest.fixture(scope="module")
def cifar_model():
    return cifar_net(CIFAR_SEED)


@pytest.mark.parametrize("sim", SIMS)
def test_cifar10_net_on_the_engine(cifar_model, tmp_path, capsys, sim):
    net = load_network(cifar_model)
    assert [type(layer).__name__ for layer in net.layers] == \
        ["ConvLayer", "ConvLayer", "ConvLayer", "DenseLayer"]
    assert all(layer.pool is not None for layer in net.layers[:3])
    images = random_images(CIFAR_IMAGES[sim], seed=IMAGE_SEED)
    golden, got, report = run_both(cifar_model, images, sim, tmp_path, capsys)
    assert got.dtype == golden.dtype == np.float32
    assert got.shape == golden.shape == (len(images), 10)
    assert np.array_equal(got, golden), f"{sim} scores differ from the golden model's"
    assert_all_layers_on(report, net, sim, len(images))

    # Within one output step of both oracles, compared as the int8 scores.
    q = integer_output(net, got)
    for oracle in (run_reference, run_onnxruntime):
        want = integer_output(net, oracle(cifar_model, images)[0])
        assert np.abs(q - want).max() <= 1, f"{sim}: {q} vs {oracle.__name__} {want}"
    # The random scores are not degenerate: several distinct values per image.
    assert all(len(np.unique(row)) > 3 for row in q), q


@pytest.mark.parametrize("sim", SIMS)
def test_digits_net_on_the_engine(tmp_path, capsys, sim):
    net = load_network(DIGITS_PATH)
    images, labels = load_test_set()
    images, labels = images[:DIGITS[sim]], labels[:DIGITS[sim]]
    golden, got, report = run_both(DIGITS_PATH, images, sim, tmp_path, capsys)
    assert got.dtype == golden.dtype and got.shape == golden.shape == (len(images), 10)
    assert np.array_equal(got, golden), f"{sim} logits differ from the golden model's"
    assert_all_layers_on(report, net, sim, len(images))
    assert np.mean(got.argmax(axis=1) == labels) >= DIGITS_MIN_ACCURACY
