import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from examples import cifar
from examples.digits import MODEL_PATH, N_TEST, load_test_set, load_train_set
from examples.digits import train
from examples.quantize import INPUT_NAME, onnxruntime_scores

#: Accuracy the committed int8 digits model must reach on the held-out images (onnxruntime).
MIN_INT8_ACCURACY = 0.95
#: Operators the example networks may contain (what the ONNX importer supports).
ALLOWED_OPS = {"QuantizeLinear", "DequantizeLinear", "Conv", "Relu", "MaxPool", "Flatten",
               "Reshape", "Gemm"}
COMPUTE_OPS = ("Conv", "MaxPool", "Conv", "MaxPool", "Flatten", "Gemm")


def compute_nodes(model):
    return [n for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]


def weights(model, node):
    """The int8 initializer that feeds ``node``'s weight input through a DequantizeLinear."""
    producers = {out: n for n in model.graph.node for out in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return inits[producers[node.input[1]].input[0]]


# --- digits -------------------------------------------------------------------------------------

def test_digits_sets():
    test_x, test_y = load_test_set()
    train_x, train_y = load_train_set()
    assert test_x.shape == (N_TEST, 1, 8, 8) and test_x.dtype == np.float32
    assert test_y.shape == (N_TEST,)
    assert train_x.shape[1:] == (1, 8, 8) and len(train_x) == len(train_y)
    assert len(train_x) + N_TEST == 1797  # the whole scikit-learn data set, nothing dropped
    assert test_x.min() == 0.0 and test_x.max() == 1.0
    assert set(test_y.tolist()) == set(range(10))
    # The test images are the last ones of the data set and do not occur in the training set.
    train_rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    overlap = sum(row.tobytes() in train_rows for row in test_x.reshape(N_TEST, -1))
    assert overlap == 0, f"{overlap} test images also occur in the training set"


def test_digits_model_is_small_valid_qdq():
    assert MODEL_PATH.stat().st_size < 64 * 1024
    model = onnx.load(MODEL_PATH)
    onnx.checker.check_model(model, full_check=True)
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
    assert tuple(n.op_type for n in compute_nodes(model)) == COMPUTE_OPS
    (graph_input,) = model.graph.input
    assert graph_input.name == INPUT_NAME
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    for node in compute_nodes(model):
        if node.op_type in ("Conv", "Gemm"):
            assert weights(model, node).dtype == np.int8, node.name


def test_digits_int8_accuracy():
    images, labels = load_test_set()
    scores = onnxruntime_scores(MODEL_PATH, images)
    assert scores.shape == (N_TEST, 10)
    accuracy = np.mean(scores.argmax(axis=1) == labels)
    assert accuracy >= MIN_INT8_ACCURACY, f"int8 accuracy {accuracy:.2%}"


def test_trainer_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    params = train.init_params(rng)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    x = rng.random((3, 1, 8, 8))
    y = rng.integers(0, 10, 3)
    _, grads = train.loss_and_grads(params, x, y)
    step = 1e-6
    for name, value in params.items():
        flat = value.reshape(-1)
        for i in np.linspace(0, flat.size - 1, 6).astype(int):
            saved = flat[i]
            flat[i] = saved + step
            plus, _ = train.loss_and_grads(params, x, y)
            flat[i] = saved - step
            minus, _ = train.loss_and_grads(params, x, y)
            flat[i] = saved
            numeric = (plus - minus) / (2 * step)
            assert abs(numeric - grads[name].reshape(-1)[i]) < 1e-6, (name, i)


def test_trainer_export_matches_numpy_forward():
    params = train.init_params(np.random.default_rng(2))
    images, _ = load_test_set()
    want = train.forward(params, images[:16].astype(np.float64))[0]
    got = onnxruntime_scores(train.export_onnx(params), images[:16])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --- CIFAR-10 (ConvNetJS) -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory):
    return cifar.build_cifar_net(0, tmp_path_factory.mktemp("cifar") / "cifar.onnx")


def test_cifar_output_shape(cifar_model):
    scores = onnxruntime_scores(cifar_model, cifar.random_images(1, seed=5))
    assert scores.shape == (1, 10)
    assert onnxruntime_scores(cifar_model, cifar.random_images(3, seed=5)).shape == (3, 10)


def test_cifar_layers(cifar_model):
    model = onnx.load(cifar_model)
    onnx.checker.check_model(model, full_check=True)
    assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
    ops = tuple(n.op_type for n in compute_nodes(model))
    assert ops == ("Conv", "MaxPool") * 3 + ("Flatten", "Gemm")
    convs = [n for n in compute_nodes(model) if n.op_type == "Conv"]
    for node, channels in zip(convs, cifar.CONV_CHANNELS):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["kernel_shape"] == [5, 5] and attrs["pads"] == [2, 2, 2, 2]
        assert weights(model, node).shape[:1] == (channels,)
    (gemm,) = [n for n in compute_nodes(model) if n.op_type == "Gemm"]
    assert weights(model, gemm).shape == (10, 4 * 4 * 20)


def test_cifar_int8_close_to_float(cifar_model):
    images = cifar.random_images(8, seed=7)
    got = onnxruntime_scores(cifar_model, images)
    want = onnxruntime_scores(cifar.float_cifar_net(0), images)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(cifar_model).graph.initializer}
    output_step = float(inits["scores_scale"])
    assert np.abs(got - want).max() <= 4 * output_step


def test_cifar_deterministic(tmp_path):
    first = cifar.build_cifar_net(1, tmp_path / "a.onnx").read_bytes()
    again = cifar.build_cifar_net(1, tmp_path / "b.onnx").read_bytes()
    other = cifar.build_cifar_net(2, tmp_path / "c.onnx").read_bytes()
    assert first == again and first != other
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_cifar_rejects_seed(seed):
    with pytest.raises(ValueError, match=re.escape(
            f"seed must be a non-negative integer, not {seed!r}")):
        cifar.build_cifar_net(seed, "unused.onnx")


def test_random_images_rejects_count():
    with pytest.raises(ValueError, match=re.escape("n must be at least 1, not 0")):
        cifar.random_images(0)
