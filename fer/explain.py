"""Why did it say "sad"? Grad-CAM (Selvaraju et al. 2017) of a class for face crops, and its map on the photo.

For a crop and a class, Grad-CAM weighs each channel of a convolutional stage's output by the mean gradient
of the class's logit with respect to it, sums, keeps the positive part and upsamples it to the crop (48 x 48):
where in the face the evidence for that class lies. Plain hooks on the torchvision network (no extra library:
`grad-cam` would bring opencv-python, which clashes with opencv-python-headless). The model runs in eval mode
(dropout off, BatchNorm's running statistics), on its device, in float32.

Which stage (`stage_grids` finds the stages of any architecture): Grad-CAM is usually taken on the last one
(layer4), but a 48-px face reaches it as a 2 x 2 grid with the shipped imagenet stem, too coarse to tell the
eyes from the mouth. Measured on PublicTest
(benchmarks/explain_sanity.py, README): layer4's maps barely pass the occlusion check and a face's maps for its
first and second class are much alike, while layer2's (6 x 6) pass it clearly and differ between classes. The
default is therefore the deepest stage whose grid is at least 6 x 6 (`default_layer`): layer2 with the
imagenet stem, layer3 with no_maxpool, layer4 with the cifar stem; any stage can be asked for.

Where a cell lies on the face: every convolution and pooling in torchvision's ResNets is padded "same"
(padding = (kernel - 1) / 2), so cell k of a stage with total stride s is centred on input pixel s * k (layer2
of the imagenet stem: pixels 0, 8, ..., 40), not on the middle of a block of s pixels as
`F.interpolate(align_corners=False)` would put it (3.5, 11.5, ...). `upsample_to_crop` puts each cell there,
with the stride measured from the model, and holds the last cell's value beyond it.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .detect import Face, crop_to_photo
from .errors import ConfigError
from .preprocess import FaceFormat, normalize
from .spec import ModelSpec

MIN_GRID = 6


def torch_network(model) -> tuple[torch.nn.Module, ModelSpec]:
    """The PyTorch network and spec of an engine or a loaded model (fer.load) on the torch engine: Grad-CAM
    needs the network's gradients, which ONNX Runtime does not give."""
    from .inference import engines_of
    engines = engines_of(model)
    if len(engines) != 1 or not hasattr(engines[0], "model"):
        raise ConfigError("Grad-CAM reads one PyTorch network: load it with engine 'torch' "
                          "(fer.load(weights, engine='torch') or fer.inference.load_engine(weights, 'torch'))")
    return engines[0].model, engines[0].spec


def stage_grids(model: torch.nn.Module, face: FaceFormat, size: int | None = None) -> dict[str, int]:
    """The network's stages and the side of each one's output grid for a face of `size` pixels (None: the
    face format's own), deepest first. A stage is the last module, among the model's children and
    grandchildren, to output a grid of a given side (> 1): a ResNet's layer4, layer3, layer2, layer1 (and its
    stem's relu), features.N of torchvision's other networks; found by a forward pass, so any architecture has
    them."""
    last = {}  # grid side -> the name of the last module that output it

    def record(name, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1:
            last[output.shape[-1]] = name
    hooks = [module.register_forward_hook(lambda module, inputs, output, name=name: record(name, output))
             for name, module in model.named_modules() if name and name.count(".") <= 1]
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, face.channels, size or face.size, size or face.size,
                                     device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {name: side for side, name in sorted(last.items())}


# A multiple of every stage's stride (at most 32 in torchvision's classification models): the grid of a
# same-padded stage is then exactly STRIDE_PROBE / stride.
STRIDE_PROBE = 64


def stage_strides(model: torch.nn.Module, face: FaceFormat) -> dict[str, int]:
    """Each stage's total stride in input pixels, measured: from the side of its grid on a 64-px input."""
    return {name: STRIDE_PROBE // grid for name, grid in stage_grids(model, face, STRIDE_PROBE).items()}


def upsample_to_crop(cams: torch.Tensor, stride: int, size: int) -> torch.Tensor:
    """N x 1 x n x n cell values -> N x size x size, cell k centred on pixel stride * k (see the module's
    docstring), bilinear between cells, the last cell's value held beyond it."""
    n = cams.shape[-1]
    span = min(stride * (n - 1) + 1, size)  # pixels from the first cell's centre to the last one's
    cams = F.interpolate(cams, size=(span, span), mode="bilinear", align_corners=True) if n > 1 \
        else cams.expand(-1, -1, span, span)
    return F.pad(cams, (0, size - span, 0, size - span), mode="replicate")[:, 0]


def default_layer(model: torch.nn.Module, face: FaceFormat) -> str:
    """The deepest stage whose grid is at least MIN_GRID x MIN_GRID (see the module's docstring)."""
    grids = stage_grids(model, face)
    return next((name for name, side in grids.items() if side >= MIN_GRID), list(grids)[-1])


def grad_cam(engine, images_u8: torch.Tensor, target: int | str | None = None,
             layer: str | None = None, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps N x H x W in [0, 1] (the crops' size; each scaled by its own maximum) and the probabilities
    N x classes, for a PyTorch engine (fer.inference.TorchEngine, or fer.load(..., engine="torch")).

    target: a class (index or name) for every crop, one per crop (a sequence), or None for each crop's
    predicted class. layer: one of stage_grids (a ResNet's layer4, layer3, layer2, ...); None: default_layer.
    """
    model, spec = torch_network(engine)
    classes = spec.classes
    targets = _targets(target, len(images_u8), classes)
    layer = layer or default_layer(model, spec.face)
    strides = stage_strides(model, spec.face)
    if layer not in strides:
        raise ConfigError(f"unknown layer '{layer}' (this network's stages: {', '.join(strides)})")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stage, stride = model.get_submodule(layer), strides[layer]
    maps, probs = [], []
    try:
        for start in range(0, len(images_u8), batch_size):
            x = normalize(images_u8[start:start + batch_size]).to(device)
            captured = {}
            handle = stage.register_forward_hook(lambda module, inputs, output: captured.update(a=output))
            try:
                with torch.enable_grad():
                    logits = model(x)
                    wanted = targets[start:start + batch_size]
                    chosen = torch.where(wanted >= 0, wanted.to(device), logits.argmax(1))
                    score = logits.gather(1, chosen[:, None]).sum()
                    gradients = torch.autograd.grad(score, captured["a"])[0]
            finally:
                handle.remove()
            weights = gradients.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * captured["a"]).sum(1, keepdim=True)).detach()
            cam = upsample_to_crop(cam, stride, x.shape[-1])
            peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
            maps.append((cam / peak).cpu().numpy())
            probs.append(F.softmax(logits.detach().float(), 1).cpu().numpy())
    finally:
        model.train(was_training)
    if not maps:
        side = spec.face.size
        return np.zeros((0, side, side), np.float32), np.zeros((0, len(classes)), np.float32)
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs)


def _targets(target, n: int, classes: tuple[str, ...]) -> torch.Tensor:
    """One class index per crop, -1 for "its predicted class"; ConfigError for a class the model lacks."""
    def index(t):
        if isinstance(t, str) and t not in classes:
            raise ConfigError(f"the model has no class {t!r} (its classes: {', '.join(classes)})")
        return -1 if t is None else classes.index(t) if isinstance(t, str) else int(t)
    if target is None or isinstance(target, (str, int, np.integer)):
        return torch.full((n,), index(target), dtype=torch.long)
    if len(target) != n:
        raise ValueError(f"{len(target)} targets for {n} crops")
    return torch.tensor([index(t) for t in target], dtype=torch.long)


class Explainer:
    """Grad-CAM for the faces a prediction found: one map per face (the mean over an ensemble's members), of
    the class the prediction gave it or of one class asked for."""

    def __init__(self, models, target: str | None = None, layer: str | None = None):
        """models: PyTorch engines (fer.inference.load_engine(path, "torch")), one or an ensemble's."""
        from .inference import engines_of
        self.models = engines_of(models)
        self.target, self.layer = target, layer
        for network, spec in map(torch_network, self.models):  # refused before any photo is read
            if target is not None and target not in spec.classes:
                raise ConfigError(f"--explain-class {target!r} is not one of the model's classes "
                                  f"({', '.join(spec.classes)})")
            if layer is not None and layer not in stage_grids(network, spec.face):
                raise ConfigError(f"--explain-layer {layer!r} is not a stage of {spec.arch} "
                                  f"(its stages: {', '.join(stage_grids(network, spec.face))})")

    def face_maps(self, image, result: dict) -> list[dict]:
        """Per face of `result` (fer.photos.predict_image's): its crop, heat map and the class explained."""
        from .detect import crop_face
        from .images import to_channels
        from .inference import face_of
        fmt = face_of(self.models)
        photo = to_channels(image, fmt.channels)
        faces = [Face(tuple(f["box"]), f.get("score"), f.get("landmarks")) for f in result["faces"]]
        if not faces:
            return []
        crops = np.stack([crop_face(photo, face, fmt=fmt) for face in faces])
        classes = [self.target or f["label"] for f in result["faces"]]
        maps = [grad_cam(m, torch.from_numpy(crops), classes, self.layer)[0] for m in self.models]
        cams = np.mean(maps, axis=0)
        return [{"face": face, "crop": crop, "cam": cam, "class": cls}
                for face, crop, cam, cls in zip(faces, crops, cams, classes)]

    def photo_overlay(self, image, result: dict) -> np.ndarray:
        """The photo (RGB) with each face's heat map where its crop came from."""
        from .images import to_rgb
        rgb = to_rgb(image)
        maps = [cam_on_photo(rgb.shape, f["face"], f["cam"]) for f in self.face_maps(image, result)]
        return overlay_photo(rgb, maps)


def colorize(cam: np.ndarray) -> np.ndarray:
    """A [0, 1] map as RGB uint8 (OpenCV's JET: blue for none, red for the most)."""
    return cv2.cvtColor(cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay_crop(crop_u8: np.ndarray, cam: np.ndarray, alpha: float = 0.45, size: int = 144) -> np.ndarray:
    """The crop the model read (gray or RGB), enlarged, with its heat map over it (RGB uint8)."""
    face = (cv2.cvtColor(crop_u8, cv2.COLOR_GRAY2RGB) if crop_u8.ndim == 2 else crop_u8).astype(np.float32)
    blended = (1 - alpha) * face + alpha * colorize(cam).astype(np.float32)
    return cv2.resize(blended.round().astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)


def cam_on_photo(photo_shape: tuple[int, int], face: Face, cam: np.ndarray, align: bool = True) -> np.ndarray:
    """A crop's heat map carried back onto the photo (H x W, 0 outside the crop): through the inverse of the
    alignment and crop."""
    height, width = photo_shape[:2]
    return cv2.warpAffine(cam.astype(np.float32), crop_to_photo(face, align, cam.shape[0]), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def overlay_photo(rgb: np.ndarray, maps: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """The photo with the heat maps of its faces over it, each where its crop came from (RGB uint8)."""
    heat = np.max(np.stack(maps), axis=0) if maps else np.zeros(rgb.shape[:2], np.float32)
    weight = (alpha * np.clip(heat, 0, 1) ** 0.5)[..., None]  # transparent where there is no evidence
    return ((1 - weight) * rgb + weight * colorize(heat)).round().astype(np.uint8)
