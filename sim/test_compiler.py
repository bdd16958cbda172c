"""The layer compiler against the golden model: every schedule, run pass by pass on the golden
model (the engine's bit-exact model, partial sums included), equals the whole layer; every
pass is one the engine accepts (compile_layer checks each with rtl.limits)."""

import random

import numpy as np
import pytest
from onnx import helper

from model.network import DenseLayer, MaxPool, PoolLayer, run_layer
from model.oracle import run_reference
from model.quant import quantize_multiplier
from rtl.limits import check_layer, engine_params
from sim.compiler import CompileError, compile_layer, execute, run_on_model
from sim.engine_driver import output_shape, register_fields
from sim.onnx_import import import_model
from sim.testing import Case, make_layer, onnx_maxpool_cases

#: A small engine, so that small layers need every kind of split: maxima that differ from
#: each other, a weight memory of 24 words and a line buffer of 32.
SMALL = engine_params(pe=2, simd=4, max_kernel=3, max_width=8, max_height=7, max_channels=6,
                      weight_depth=24, line_buffer_depth=32, max_stride=3, max_dilation=2,
                      pool_window_slots=2, pool_max_stride=4)
DEFAULT = engine_params()


def compiled(layer, hw, x):
    schedule = compile_layer(layer, hw)
    for p in schedule.passes:
        assert check_layer(register_fields(p.layer, p.psum is not None, hw["simd"]), hw) is None, \
            p.what
    return schedule, execute(schedule, x, run_on_model)


def random_conv(r, rng):
    k, s, d = r.choice([1, 2, 3, 4, 5, 7]), r.choice([1, 2, 3, 4]), r.choice([1, 1, 2, 3])
    keff = (k - 1) * d + 1
    case = Case(r.randint(1, 14), r.randint(1, 14), r.randint(keff, 20), r.randint(keff, 20),
                k=(k, k), stride=(s, s), pads=tuple(r.randint(0, k - 1) for _ in range(4)),
                dilation=(d, d), x_dtype=r.choice(("int8", "uint8")),
                w_dtype=r.choice(("int8", "uint8")), out=r.choice(("int8", "uint8", "int32")),
                relu=r.random() < 0.5)
    layer, x = make_layer(case, rng)
    if case.out != "int32" and r.random() < 0.3:
        k = r.choice([2, 3, 5])
        layer.pool = MaxPool(k, r.choice([1, 2, 3]), tuple(r.randint(0, k - 1) for _ in range(4)),
                             r.choice([1, 2]), ceil_mode=r.random() < 0.3)
        try:
            layer.out_shape = output_shape(layer)
            run_layer(layer, x[None])
        except ValueError:
            layer.pool = None
            layer.out_shape = output_shape(layer)
    return case, layer, x


@pytest.mark.parametrize("seed", range(4))
def test_random_convs_split_every_way(seed):
    """Output and input channel groups, sub-kernels, tiles, strides and dilations above the
    engine's, fused pools kept or split off: the schedule equals the layer."""
    r, rng = random.Random(seed), np.random.default_rng(seed)
    kinds = set()
    for _ in range(60):
        case, layer, x = random_conv(r, rng)
        schedule, got = compiled(layer, SMALL, x[None])
        want = run_layer(layer, x[None])
        assert got.dtype == want.dtype and np.array_equal(got, want), case.label()
        kinds.update(p.kind for p in schedule.passes)
    assert kinds >= {"conv", "conv+psum", "pool"}


def random_pool(r, rng, hw):
    k = (r.choice([1, 2, 3, 4, 5, 7]), r.choice([1, 2, 3, 5]))
    s = (r.choice([1, 2, 3]), r.choice([1, 2, 4]))
    d = (r.choice([1, 1, 2, 3]), r.choice([1, 2]))
    pads = (r.randint(0, k[0] - 1), r.randint(0, k[1] - 1), r.randint(0, k[0] - 1),
            r.randint(0, k[1] - 1))
    big = hw is DEFAULT
    c, h, w = r.randint(1, 80 if big else 20), r.randint(1, 300 if big else 30), \
        r.randint(1, 240 if big else 30)
    dtype = r.choice(("int8", "uint8"))
    pool = MaxPool(k, s, pads, d, ceil_mode=r.random() < 0.3)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (1, c, h, w)).astype(dtype)
    try:
        want = pool.apply(x)
    except ValueError:              # no output, or a window of padding only: refused anyway
        return None
    return PoolLayer("pool", ("pool",), (c, h, w), want.shape[1:], dtype, pool), x, want


@pytest.mark.parametrize("hw", [SMALL, DEFAULT], ids=["small", "default"])
def test_random_pools_any_geometry(hw):
    """Overlapping, dilated, padded, ceil_mode pools and maps larger than the engine."""
    r, rng = random.Random(7), np.random.default_rng(7)
    done = 0
    while done < 60:
        drawn = random_pool(r, rng, hw)
        if drawn is None:
            continue
        layer, x, want = drawn
        _, got = compiled(layer, hw, x)
        assert np.array_equal(got, want), (layer.pool, layer.in_shape)
        done += 1


@pytest.mark.parametrize("hw", [SMALL, DEFAULT], ids=["small", "default"])
@pytest.mark.parametrize("in_shape, out", [((16, 4, 4), 70), ((300,), 10), ((64, 2, 2), 100),
                                           ((9, 3, 3), 1000), ((4096,), 70)])
def test_dense_of_any_size(hw, in_shape, out):
    rng = np.random.default_rng(out)
    n = int(np.prod(in_shape))
    multiplier, shift = quantize_multiplier(np.full(out, 1e-3))
    layer = DenseLayer(name="fc", nodes=("fc",), in_shape=in_shape, out_shape=(out,),
                       in_dtype="uint8", weight=rng.integers(-128, 128, (out, n)).astype(np.int8),
                       bias=rng.integers(-1000, 1000, out).astype(np.int32), x_zero_point=7,
                       w_zero_point=np.zeros(out, np.int32), multiplier=multiplier, shift=shift,
                       y_zero_point=3, out_dtype="int8")
    x = rng.integers(0, 256, (2, *in_shape)).astype(np.uint8)
    _, got = compiled(layer, hw, x)
    assert np.array_equal(got, run_layer(layer, x))


@pytest.mark.parametrize("hw", [SMALL, DEFAULT], ids=["small", "default"])
@pytest.mark.parametrize("name, node, x", onnx_maxpool_cases(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_onnx_maxpool_node_tests(hw, name, node, x):
    """Each 2-D MaxPool node test of ONNX, on 8-bit data, on the engine's passes, against
    the ONNX reference evaluator."""
    dtype = x.dtype if x.dtype == np.uint8 else np.dtype(np.int8)
    info = np.iinfo(dtype)
    q = x if x.dtype == np.uint8 else \
        np.clip(np.round(x * 20), info.min, info.max).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], name="pool",
                          **{a.name: helper.get_attribute_value(a) for a in node.attribute})],
        "g", [helper.make_tensor_value_info("x", elem, list(q.shape))],
        [helper.make_tensor_value_info("y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    net = import_model(model)
    (layer,) = net.layers
    _, got = compiled(layer, hw, q)
    want = run_reference(model, q)[0]
    assert np.array_equal(got, want)


def test_what_cannot_run_is_refused_in_one_line():
    """A pool on an engine without a pool unit; overlapping windows on a pool unit of one
    slot, at the boundary (2x2 stride 2 does not overlap and runs, 3x3 stride 2 does)."""
    layer = PoolLayer("p1", ("p1",), (4, 8, 8), (4, 4, 4), "int8", MaxPool(2, 2))
    with pytest.raises(CompileError, match=r"^layer 'p1': the engine has no max-pool unit"):
        compile_layer(layer, engine_params(pool_window_slots=0))
    hw = engine_params(pool_window_slots=1)
    x = np.random.default_rng(1).integers(-128, 128, (1, 4, 12, 12)).astype(np.int8)
    for k, ok in ((2, True), (3, False)):
        pool = MaxPool(k, 2)
        layer = PoolLayer("p2", ("p2",), (4, 12, 12), (4, *pool.output_hw(12, 12)), "int8",
                          pool)
        if ok:
            _, got = compiled(layer, hw, x)
            assert np.array_equal(got, pool.apply(x))
        else:
            with pytest.raises(CompileError) as info:
                compile_layer(layer, hw)
            assert str(info.value) == (
                "layer 'p2': pool kernel 3x3 at stride 2x2 overlaps windows, which needs 2 "
                "window slots and kernels of 2; the engine has 1 slot(s) and a maximum kernel "
                "of 7")


def test_pool_strides_above_the_units_and_tiny_engines():
    """A pool stride above pool_max_stride (the stride-1 pool read every s-th value); a
    window wider than the engine's map is refused in one line, not run as nothing."""
    x = np.random.default_rng(2).integers(-128, 128, (1, 3, 14, 15)).astype(np.int8)
    hw = engine_params(max_kernel=3, pool_max_stride=3)
    for stride in (3, 4, 6):
        pool = MaxPool(2, stride)
        layer = PoolLayer("p", ("p",), (3, 14, 15), (3, *pool.output_hw(14, 15)), "int8", pool)
        _, got = compiled(layer, hw, x)
        assert np.array_equal(got, pool.apply(x))
    tiny = engine_params(max_kernel=3, max_width=1, max_dilation=1, pool_window_slots=3)
    pool = MaxPool((1, 3), 1, dilation=2)
    layer = PoolLayer("p3", ("p3",), (1, 4, 8), (1, *pool.output_hw(4, 8)), "int8", pool)
    with pytest.raises(CompileError, match=r"^layer 'p3.*exceeds the engine's map 224x1$"):
        compile_layer(layer, tiny)


def real_layer(cin, cout, h, w, k, stride=1, pads=0, dilation=1, pool=None, seed=0):
    case = Case(cin, cout, h, w, k=(k, k), stride=(stride, stride), pads=(pads,) * 4,
                dilation=(dilation, dilation), relu=True)
    layer, x = make_layer(case, np.random.default_rng(seed))
    if pool is not None:
        layer.pool = pool
        layer.out_shape = output_shape(layer)
    return layer, x


@pytest.mark.parametrize("args", [
    dict(cin=128, cout=128, h=16, w=16, k=3, pads=1),                   # VGG/ResNet channels
    dict(cin=96, cout=160, h=12, w=12, k=3, pads=1),
    dict(cin=3, cout=16, h=300, w=300, k=3, pads=1),                    # a 300x300 map
    dict(cin=8, cout=8, h=260, w=20, k=3, pads=1),                      # 260 high
    dict(cin=3, cout=8, h=227, w=227, k=11, stride=4),                  # AlexNet conv1
    dict(cin=4, cout=8, h=20, w=20, k=9, pads=4),                       # a 9x9 kernel
    dict(cin=8, cout=96, h=40, w=40, k=3, pads=4, dilation=4),          # dilation 4
    dict(cin=8, cout=8, h=14, w=14, k=3, pads=1,                         # GoogLeNet's 3x3/1
         pool=MaxPool(3, 1, pads=(1, 1, 1, 1))),
    dict(cin=64, cout=64, h=10, w=10, k=7, pads=3),     # 3136 weight words > the default 1024
], ids=["128-128", "96-160", "300x300", "260x20", "alexnet-conv1", "9x9", "dilation4",
        "fused-3x3s1-pool", "7x7-64-64-weights"])
def test_layers_of_real_networks_on_the_default_engine(args):
    layer, x = real_layer(**args)
    schedule, got = compiled(layer, DEFAULT, x[None])
    assert np.array_equal(got, run_layer(layer, x[None]))
    assert check_layer(register_fields(layer), DEFAULT) is not None    # not one pass
    assert len(schedule.passes) > 1


# --- batch reuse: dense layers with their samples stacked -------------------------------------

@pytest.mark.parametrize("batch", [2, 5, 9])
def test_folded_dense_equals_each_sample(batch):
    """A whole-input conv run on samples stacked one under the other, then split again, equals
    the layer run sample by sample (the last group zero-padded); the pass is one the engine
    takes."""
    from sim.compiler import Folded

    rng = np.random.default_rng(batch)
    layer, _ = make_layer(Case(5, 6, 3, 2, k=(3, 2), out="uint8", relu=True), rng)
    hw = dict(SMALL, max_height=7)          # at most 2 samples of height 3 a pass
    folded = Folded.of(layer, batch, hw)
    assert folded is not None and folded.samples == 2
    assert check_layer(register_fields(folded.layer, simd=hw["simd"]), hw) is None
    x = rng.integers(-128, 128, (batch, *layer.in_shape)).astype(np.int8)
    y = folded.unfold(run_layer(folded.layer, folded.fold(x)), batch)
    assert np.array_equal(y, run_layer(layer, x))


def test_folded_only_where_it_holds():
    """Folding needs a batch, a kernel covering the input, a height within the maximum stride
    (the last one taken, the next refused) and a stacked map the engine takes."""
    from dataclasses import replace

    from sim.compiler import Folded

    rng = np.random.default_rng(1)
    layer, _ = make_layer(Case(5, 6, 3, 2, k=(3, 2)), rng)
    assert Folded.of(layer, 1, SMALL) is None
    assert Folded.of(layer, 2, dict(SMALL, max_stride=3)) is not None
    assert Folded.of(layer, 2, dict(SMALL, max_stride=2)) is None
    padded = replace(layer, pads=(1, 0, 1, 0), out_shape=(6, 3, 1))
    assert Folded.of(padded, 2, SMALL) is None
    assert Folded.of(layer, 2, dict(SMALL, max_height=5)) is None     # one sample a pass
