"""ONNX copies of a weights file, for ONNX Runtime on the CPU.

  float32  exported as the model is in eval mode, dynamic batch; needs no data, so it is made on first use
           into the cache (fer.paths.cache_dir()/onnx), keyed by the digest of the weights' tensors.
  int8     statically quantized (ONNX Runtime's QDQ format, per-channel int8 weights, uint8 activations),
           calibrated on training crops; written beside the weights as NAME.int8.onnx.

Each file's metadata names the weights it came from (the sha256 of their tensors: a new temperature written by
`calibrate` does not change it), the class order, the input size (C x H x W, the weights' FaceFormat) and the
temperature at export. A file that names other weights, other classes or another input is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import WeightsError, one_line, quote
from .paths import DEFAULT_WEIGHTS, cache_dir
from .preprocess import FaceFormat, normalize
from .runtime import atomic_write, check_outputs
from .weights import load_network, read_metadata, read_spec

ONNX_FORMAT = "fer-onnx/1"
INPUT_NAME, OUTPUT_NAME = "faces", "logits"
CALIBRATION_CROPS = 512
ONNX_MAX_BYTES = 2**31  # one protobuf message


def weights_digest(path) -> str:
    """sha256 of a safetensors file's tensor data (its header, which holds the metadata, left out)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        header_size = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        if 8 + header_size > size:
            raise WeightsError(f"{quote(path)} is not a safetensors weights file (truncated: {size} bytes)")
        f.seek(8 + header_size)
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def float_onnx_path(weights) -> Path:
    weights = Path(weights)
    return cache_dir() / "onnx" / f"{weights.stem}-{weights_digest(weights)[:16]}.onnx"


def int8_onnx_path(weights) -> Path:
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.int8.onnx")


def export_onnx(weights=None, out=None) -> Path:
    """The float32 ONNX model of a weights file (default: the shipped one), checked against PyTorch."""
    import onnx
    import torch
    weights = Path(weights or DEFAULT_WEIGHTS)
    out = Path(out) if out else float_onnx_path(weights)
    check_outputs({"--out": out}, [weights])
    model, spec = load_network(weights)
    size = sum(t.numel() for t in model.state_dict().values()) * 4
    if size >= ONNX_MAX_BYTES:  # protobuf's limit: past it onnx.save fails with a bare EncodeError
        raise WeightsError(f"{quote(weights)} holds {size / 1e9:.1f} GB of float32 tensors, and an ONNX file at most "
                           f"{ONNX_MAX_BYTES / 1e9:.1f} GB: use --engine torch")
    example = torch.randn(2, *spec.face.input_size)
    with warnings.catch_warnings(), atomic_write(out) as tmp:
        warnings.simplefilter("ignore")
        # dynamic_shapes by position: a network's forward may call its input anything (nn.Sequential: input)
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    external_data=False, verbose=False)
        proto = program.model_proto
        _set_metadata(proto, weights, "float32")
        onnx.save(proto, str(tmp))
        _check_against_torch(tmp, model, spec, weights)
    return out


def export_int8(weights=None, data=None, out=None, crops: int = CALIBRATION_CROPS) -> Path:
    """The int8 ONNX model, calibrated on `crops` training faces of `data` (the data set the weights were
    trained on; its faces read in the weights' format)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .datasets import load_split, splits_of

    weights = Path(weights or DEFAULT_WEIGHTS)
    out = Path(out) if out else int8_onnx_path(weights)
    check_outputs({"--out": out}, [weights, data])
    source = float_onnx_path(weights)
    if not onnx_matches(source, weights):
        export_onnx(weights, source)
    face = read_spec(weights).face
    split = "train" if "train" in splits_of(data, face=face) else "all"
    calibration = normalize(load_split(data, split, face=face).subset(crops, seed=0).images).contiguous().numpy()

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="fer-int8-") as scratch, atomic_write(out) as tmp:
        prepared = Path(scratch) / "prepared.onnx"  # shapes inferred and graph folded, as quantization wants
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(tmp), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        proto = onnx.load(str(tmp))
        _set_metadata(proto, weights, "int8", calibration=f"{len(calibration)} training crops")
        onnx.save(proto, str(tmp))
    return out


def _set_metadata(proto, weights: Path, precision: str, **extra) -> None:
    import onnx.helper
    meta = read_metadata(weights)
    temperature = meta.get("temperature", 1.0)
    values = {"format": ONNX_FORMAT, "weights_sha256": weights_digest(weights), "weights_name": weights.name,
              "classes": json.dumps(meta["classes"]), "input_size": json.dumps(meta["input_size"]),
              "temperature": json.dumps(temperature), "precision": precision, **extra}
    onnx.helper.set_model_props(proto, {key: str(value) for key, value in values.items()})  # replaces any there


def _check_against_torch(path: Path, model, spec, weights) -> None:
    """The exported graph must give PyTorch's logits (float32) on a random batch."""
    import onnxruntime as ort
    import torch
    x = torch.randn(8, *spec.face.input_size)
    with torch.inference_mode():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x.numpy()})[0]
    if not np.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise WeightsError(f"the ONNX export of {quote(weights)} differs from PyTorch "
                           f"(max {np.abs(got - expected).max():.2e})")


def ort_session(path):
    """ONNX Runtime's session for the ONNX file at `path`, or None where it cannot load one from it."""
    import onnxruntime as ort
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ONNX Runtime raises its own kinds for missing, damaged or odd graphs
        return None


def _read_graph(path: Path, session) -> tuple[dict, list, list]:
    """(metadata, the graph's inputs as (name, dims), its outputs' dims), dims None where not fixed. From the
    session where ONNX Runtime could load the file (the `onnx` package costs the one-photo command most of a
    second to import); else from the file itself, which says why it is no model of ours."""
    def fixed(dims):
        return [d if isinstance(d, int) else None for d in dims]
    if session is not None:
        return (dict(session.get_modelmeta().custom_metadata_map),
                [(i.name, fixed(i.shape)) for i in session.get_inputs()],
                [fixed(o.shape) for o in session.get_outputs()])
    import onnx
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several kinds for damaged files
        raise WeightsError(f"{quote(path)} is not an ONNX model ({one_line(e)[:160]})") from None

    def dims(value):
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    initializers = {t.name for t in proto.graph.initializer}
    return ({p.key: p.value for p in proto.metadata_props},
            [(i.name, dims(i)) for i in proto.graph.input if i.name not in initializers],
            [dims(o) for o in proto.graph.output])


def onnx_metadata(path, session=None) -> dict:
    """The metadata of one of our ONNX files; WeightsError for a missing, truncated or foreign file, or one
    whose graph does not read the faces its metadata names. session: ONNX Runtime's for the file, where the
    caller has one."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no ONNX file at {quote(path)}")
    meta, inputs, outputs = _read_graph(path, session if session is not None else ort_session(path))
    if meta.get("format") != ONNX_FORMAT:
        raise WeightsError(f"{quote(path)} is an ONNX model but not one of fer's (no '{ONNX_FORMAT}' metadata)")
    try:
        classes = json.loads(meta.get("classes", ""))
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise ValueError
    except ValueError:
        raise WeightsError(f"{quote(path)} has no list of classes in its metadata") from None
    try:
        input_size = json.loads(meta.get("input_size", ""))
        if not isinstance(input_size, list) or len(input_size) != 3 or input_size[1] != input_size[2]:
            raise ValueError
        FaceFormat(input_size[1], input_size[0])
    except ValueError:
        raise WeightsError(f"{quote(path)} has no input size C x H x W of a square face in its metadata") from None
    # The graph takes N x C x H x W faces (1 x 48 x 48 for FER-2013's models) and gives N x classes logits: a
    # file carrying another graph under fer's metadata is refused here, not when a photo reaches it.
    if [name for name, _ in inputs] != [INPUT_NAME] or inputs[0][1][1:] != input_size or len(outputs) != 1 \
            or outputs[0][1:] != [len(classes)]:
        raise WeightsError(f"{quote(path)} carries fer's metadata but its graph does not map N x "
                           f"{' x '.join(map(str, input_size))} faces to N x {len(classes)} scores")
    return meta


def check_onnx(path, weights, session=None) -> dict:
    """The ONNX file's metadata if it was made from `weights`, for their classes and this code's input."""
    meta = onnx_metadata(path, session)
    weights_meta = read_metadata(weights)
    if meta.get("weights_sha256") != weights_digest(weights):
        raise WeightsError(f"{quote(path)} was exported from other weights than {quote(weights)} "
                           f"(export it again: python -m fer export --weights {weights})")
    if json.loads(meta["classes"]) != weights_meta["classes"] or json.loads(meta["input_size"]) != \
            weights_meta["input_size"]:
        raise WeightsError(f"{quote(path)} has other classes or another input size than its weights")
    return meta


def onnx_matches(path: Path, weights: Path) -> bool:
    """Whether the ONNX file at path exists and was made from these weights."""
    try:
        check_onnx(path, weights)
        return True
    except WeightsError:
        return False
