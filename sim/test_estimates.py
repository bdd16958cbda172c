"""``convcore plan``'s cycle estimates against the simulated RTL.

Both example networks, the digits CNN and the ConvNetJS CIFAR-10 net, run one image through the
default engine on Verilator (as ``convcore run --backend verilator`` does); every layer's
cycles (all it took: parameters not loaded during the layer before, register writes, setup,
fill, drain) must be within :data:`TOLERANCE` of the plan's estimate, which is made from the
engine's parameters alone, before any simulation.
"""

import numpy as np
import pytest

from examples.cifar import random_images
from examples.digits import MODEL_PATH as DIGITS_PATH
from examples.digits import load_test_set
from model.network import finish_output, quantize_input, run_network
from rtl.limits import engine_params
from sim.bench import cifar_net
from sim.hw_backend import HardwareBackend
from sim.onnx_import import load_network
from sim.plan import plan_layers

#: Largest relative difference between a layer's estimate and its simulated cycles.
TOLERANCE = 0.05


def _images(name):
    if name == "digits":
        return DIGITS_PATH, load_test_set()[0][:1]
    return cifar_net(0), random_images(1, seed=3)


@pytest.mark.parametrize("name", ["digits", "cifar"])
def test_plan_estimates_every_layer_within_tolerance(name):
    path, images = _images(name)
    net = load_network(path)
    hw = engine_params()
    rows = plan_layers(net, hw)
    backend = HardwareBackend("verilator", "default")
    try:
        out = backend.run_network(net.layers, quantize_input(net, images))
    finally:
        backend.close()
    assert len(out) == len(rows) == len(net.layers)
    assert np.array_equal(finish_output(net, out[-1][0]), run_network(net, images)), \
        f"{name}: the simulated output differs from the golden model"
    for row, (_, info) in zip(rows, out):
        assert info["ran_on"] == "verilator", (row.name, info)
        est, got = row.est_cycles, info["cycles"]
        assert abs(est - got) <= TOLERANCE * got, \
            f"{name} {row.name}: plan estimates {est:,} cycles, simulated {got:,}"
