"""Train the digits CNN in NumPy, export it to ONNX and quantize it to int8 with onnxruntime.

``python -m examples.digits.train`` regenerates ``examples/digits/digits_int8.onnx``
deterministically (fixed seed, fixed data order) and prints float and int8 test accuracy.

The network, in the lecture's CONV-RELU-POOL pattern::

    input [N, 1, 8, 8]
    conv1 3x3 pad 1, 1 -> 16 channels,  ReLU, maxpool 2x2   -> [N, 16, 4, 4]
    conv2 3x3 pad 1, 16 -> 32 channels, ReLU, maxpool 2x2   -> [N, 32, 2, 2]
    flatten, fc 128 -> 10                                   -> logits [N, 10]

Training is plain mini-batch Adam on softmax cross-entropy with vectorized (im2col) forward and
backward passes, plus random one-pixel shifts of half of the training images. It runs on one
BLAS thread so that the result does not depend on the machine's core count; it takes about
20 seconds.
"""

import time

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from ..quantize import INPUT_NAME, onnxruntime_scores, quantize_qdq
from . import MODEL_PATH
from .data import load_test_set, load_train_set

SEED = 0
CONV1_CHANNELS = 16
CONV2_CHANNELS = 32
KERNEL = 3
PAD = 1
POOL = 2
IMAGE_SIZE = 8
N_CLASSES = 10
FC_INPUTS = CONV2_CHANNELS * (IMAGE_SIZE // POOL // POOL) ** 2

EPOCHS = 60
BATCH = 32
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: Largest random shift (pixels, each axis) applied to training images.
MAX_SHIFT = 1
#: Fraction of training images that are shifted in each epoch.
SHIFT_PROBABILITY = 0.5

ONNX_OPSET = 13
#: Calibration runs over all training images in batches of this size.
CALIBRATION_BATCH = 128


# --- layers: forward returns (output, cache), backward takes (grad_output, cache) -------------

def conv_forward(x, w, b):
    """Stride-1 convolution with zero padding PAD; x [N,C,H,W], w [O,C,K,K] -> [N,O,H,W]."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    cols = sliding_window_view(xp, (KERNEL, KERNEL), axis=(2, 3))        # [N,C,H,W,K,K]
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * wd, -1)       # [NHW, C*K*K]
    out = cols @ w.reshape(w.shape[0], -1).T + b                          # [NHW, O]
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), (x.shape, cols, w)


def conv_backward(dout, cache):
    x_shape, cols, w = cache
    n, c, h, wd = x_shape
    d2 = dout.transpose(0, 2, 3, 1).reshape(n * h * wd, -1)               # [NHW, O]
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    dcols = (d2 @ w.reshape(w.shape[0], -1)).reshape(n, h, wd, c, KERNEL, KERNEL)
    dxp = np.zeros((n, c, h + 2 * PAD, wd + 2 * PAD))
    for i in range(KERNEL):
        for j in range(KERNEL):
            dxp[:, :, i:i + h, j:j + wd] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, PAD:PAD + h, PAD:PAD + wd], dw, db


def relu_forward(x):
    return np.maximum(x, 0), x > 0


def relu_backward(dout, mask):
    return dout * mask


def pool_forward(x):
    """Max pooling POOL x POOL with stride POOL."""
    n, c, h, w = x.shape
    windows = (x.reshape(n, c, h // POOL, POOL, w // POOL, POOL)
               .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // POOL, w // POOL, POOL * POOL))
    idx = windows.argmax(axis=-1)[..., np.newaxis]
    return np.take_along_axis(windows, idx, axis=-1)[..., 0], (x.shape, idx)


def pool_backward(dout, cache):
    (n, c, h, w), idx = cache
    d = np.zeros((n, c, h // POOL, w // POOL, POOL * POOL))
    np.put_along_axis(d, idx, dout[..., np.newaxis], axis=-1)
    return (d.reshape(n, c, h // POOL, w // POOL, POOL, POOL)
            .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w))


# --- the network -------------------------------------------------------------------------------

def init_params(rng):
    """He-normal weights, zero biases."""
    def he(shape, fan_in):
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return {
        "conv1.w": he((CONV1_CHANNELS, 1, KERNEL, KERNEL), KERNEL * KERNEL),
        "conv1.b": np.zeros(CONV1_CHANNELS),
        "conv2.w": he((CONV2_CHANNELS, CONV1_CHANNELS, KERNEL, KERNEL),
                      CONV1_CHANNELS * KERNEL * KERNEL),
        "conv2.b": np.zeros(CONV2_CHANNELS),
        "fc.w": he((N_CLASSES, FC_INPUTS), FC_INPUTS),
        "fc.b": np.zeros(N_CLASSES),
    }


def forward(params, x):
    """Logits [N, 10] and the caches the backward pass needs."""
    h, c1 = conv_forward(x, params["conv1.w"], params["conv1.b"])
    h, r1 = relu_forward(h)
    h, p1 = pool_forward(h)
    h, c2 = conv_forward(h, params["conv2.w"], params["conv2.b"])
    h, r2 = relu_forward(h)
    h, p2 = pool_forward(h)
    flat = h.reshape(h.shape[0], -1)
    logits = flat @ params["fc.w"].T + params["fc.b"]
    return logits, (c1, r1, p1, c2, r2, p2, flat, h.shape)


def loss_and_grads(params, x, labels):
    logits, (c1, r1, p1, c2, r2, p2, flat, pooled_shape) = forward(params, x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.log(probs[np.arange(n), labels]).mean()
    dlogits = probs
    dlogits[np.arange(n), labels] -= 1
    dlogits /= n
    grads = {"fc.w": dlogits.T @ flat, "fc.b": dlogits.sum(axis=0)}
    d = (dlogits @ params["fc.w"]).reshape(pooled_shape)
    d = relu_backward(pool_backward(d, p2), r2)
    d, grads["conv2.w"], grads["conv2.b"] = conv_backward(d, c2)
    d = relu_backward(pool_backward(d, p1), r1)
    _, grads["conv1.w"], grads["conv1.b"] = conv_backward(d, c1)
    return loss, grads


def predict(params, x):
    return forward(params, x.astype(np.float64))[0].argmax(axis=1)


def random_shift(rng, x):
    """Shift a SHIFT_PROBABILITY fraction of the images by up to MAX_SHIFT pixels along each axis,
    filling with zeros; the others stay as they are."""
    n = x.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)))
    dy = rng.integers(0, 2 * MAX_SHIFT + 1, n)
    dx = rng.integers(0, 2 * MAX_SHIFT + 1, n)
    rows = dy[:, None] + np.arange(IMAGE_SIZE)[None, :]                    # [N, H]
    cols = dx[:, None] + np.arange(IMAGE_SIZE)[None, :]                    # [N, W]
    shifted = padded[np.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]
    keep = rng.random(n) >= SHIFT_PROBABILITY
    shifted[keep] = x[keep]
    return shifted


def train(images, labels, *, seed=SEED, epochs=EPOCHS, log=print):
    """Adam on mini-batches with a cosine learning-rate decay; returns the float64 parameters."""
    from threadpoolctl import threadpool_limits  # ships with scikit-learn

    with threadpool_limits(limits=1):
        return _train(images, labels, seed=seed, epochs=epochs, log=log)


def _train(images, labels, *, seed, epochs, log):
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    moment1 = {k: np.zeros_like(v) for k, v in params.items()}
    moment2 = {k: np.zeros_like(v) for k, v in params.items()}
    x_all = images.astype(np.float64)
    steps_per_epoch = -(-len(x_all) // BATCH)
    total_steps = epochs * steps_per_epoch
    beta1, beta2 = ADAM_BETAS
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(x_all))
        losses = []
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            x = random_shift(rng, x_all[batch])
            loss, grads = loss_and_grads(params, x, labels[batch])
            losses.append(loss)
            step += 1
            lr = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * step / total_steps))
            for k in params:
                g = grads[k] + WEIGHT_DECAY * params[k]
                moment1[k] = beta1 * moment1[k] + (1 - beta1) * g
                moment2[k] = beta2 * moment2[k] + (1 - beta2) * g * g
                m_hat = moment1[k] / (1 - beta1 ** step)
                v_hat = moment2[k] / (1 - beta2 ** step)
                params[k] -= lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS)
        if log and ((epoch + 1) % 10 == 0 or epoch == 0):
            log(f"epoch {epoch + 1:3d}/{epochs}: loss {np.mean(losses):.4f}")
    return params


# --- ONNX export and quantization ---------------------------------------------------------------

def export_onnx(params) -> onnx.ModelProto:
    """The float network as an ONNX graph: input "input" [N,1,8,8] (N dynamic), output "logits"
    [N,10]. Node names (conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc) name the layers."""
    def init(name, value):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    conv_attrs = dict(kernel_shape=[KERNEL, KERNEL], pads=[PAD] * 4, strides=[1, 1])
    pool_attrs = dict(kernel_shape=[POOL, POOL], strides=[POOL, POOL])
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "conv1.w", "conv1.b"], ["conv1"], "conv1", **conv_attrs),
        helper.make_node("Relu", ["conv1"], ["relu1"], "relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], "pool1", **pool_attrs),
        helper.make_node("Conv", ["pool1", "conv2.w", "conv2.b"], ["conv2"], "conv2", **conv_attrs),
        helper.make_node("Relu", ["conv2"], ["relu2"], "relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], "pool2", **pool_attrs),
        helper.make_node("Flatten", ["pool2"], ["flatten"], "flatten", axis=1),
        helper.make_node("Gemm", ["flatten", "fc.w", "fc.b"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES])],
        [init(k, v) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="convcore examples.digits.train")
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    started = time.perf_counter()
    train_x, train_y = load_train_set()
    test_x, test_y = load_test_set()
    print(f"training on {len(train_x)} images, testing on {len(test_x)} held-out images")
    params = train(train_x, train_y)
    print(f"trained in {time.perf_counter() - started:.1f} s")
    numpy_acc = np.mean(predict(params, test_x) == test_y)

    float_model = export_onnx(params)
    float_pred = onnxruntime_scores(float_model, test_x).argmax(axis=1)
    float_acc = np.mean(float_pred == test_y)
    quantize_qdq(float_model, MODEL_PATH, [train_x[i:i + CALIBRATION_BATCH]
                                           for i in range(0, len(train_x), CALIBRATION_BATCH)])
    int8_pred = onnxruntime_scores(MODEL_PATH, test_x).argmax(axis=1)
    int8_acc = np.mean(int8_pred == test_y)

    print(f"float accuracy (NumPy):       {numpy_acc:.2%}")
    print(f"float accuracy (onnxruntime): {float_acc:.2%}")
    print(f"int8 accuracy (onnxruntime):  {int8_acc:.2%}  {MODEL_PATH} "
          f"({MODEL_PATH.stat().st_size} bytes)")
    print(f"int8 and float predictions agree on {np.sum(int8_pred == float_pred)}/{len(test_x)} "
          f"test images")


if __name__ == "__main__":
    main()
