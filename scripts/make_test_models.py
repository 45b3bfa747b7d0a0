"""Export the small real-world test models under tests/models/data/ (run once; the outputs are committed).

Why real exports: hand-built graphs never show what breaks TVM's importer in practice (dynamic axes,
Shape→Gather→Concat→Reshape subgraphs, Resize+Concat with symbolic H/W, unfused BatchNorm). These
models are made with PyTorch's TorchScript exporter, the one most published ONNX files come from.

Needs torch (not a project dependency): `.venv/bin/pip install torch==2.13.0`, then
`.venv/bin/python scripts/make_test_models.py`. Everything is seeded, so a rerun gives the same weights.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

DATA = Path(__file__).resolve().parent.parent / "tests" / "models" / "data"
OPSET = 17
SEED = 0
MAX_BYTES = 1 << 20


class PreActBlock(nn.Module):
    """ResNet v2 block: BN→ReLU→conv twice plus a shortcut; the leading BN follows an Add, so the
    exporter cannot fold it into a conv and BatchNormalization stays in the ONNX graph."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class ResNetSmall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(PreActBlock(16, 16, 1), PreActBlock(16, 32, 2))
        self.bn = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.blocks(self.stem(x)))))
        return self.fc(x.view(x.size(0), -1))  # exports as Shape→Gather→Unsqueeze→Concat→Reshape


def _dw_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class MobileNetSmall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
            _dw_separable(16, 32, 1),
            _dw_separable(32, 64, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU())


class UNetSmall(nn.Module):
    """Encoder/decoder with YOLO-neck style nearest upsampling + Concat skip connections.

    The second upsample goes to the skip's size (FPN style), which exports as Shape→Slice→Concat→Resize.
    """

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = _conv_relu(3, 8), _conv_relu(8, 16), _conv_relu(16, 32)
        self.dec2, self.dec1 = _conv_relu(48, 16), _conv_relu(24, 8)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(m), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1))
        return self.head(d1)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_relu(1, 16), _conv_relu(16, 32), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.reshape(x.size(0), -1))


def _randomize_batchnorm(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics so folding it is visible in the numbers."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _export(
    model: nn.Module, example: torch.Tensor, name: str, inp: str, out: str, dyn: dict[int, str]
) -> Path:
    path = DATA / f"{name}.onnx"
    model.eval()
    # the TorchScript exporter: `dynamo=False` where torch offers the choice, the only one before
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[inp],
            output_names=[out],
            dynamic_axes={inp: dyn, out: dyn},
            opset_version=OPSET,
            **kwargs,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    _check_matches_torch(model, example, path)
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path} is {size} bytes"
    print(f"{path.name}: {size} bytes, ops {sorted({n.op_type for n in onnx.load(str(path)).graph.node})}")
    return path


def _check_matches_torch(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The export is only useful as a reference if ONNX Runtime agrees with torch, also at batch 2."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.cat([example, torch.randn_like(example)])
    with torch.no_grad():
        want = model(batch).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: batch.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _train_digits() -> tuple[DigitsCNN, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=SEED, stratify=digits.target
    )
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(30):
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model, x_test, y_test.astype(np.int64)


def _make_digits() -> None:
    model, x_test, y_test = _train_digits()
    path = _export(model.eval(), torch.from_numpy(x_test[:1]), "digits_cnn", "image", "logits", {0: "batch"})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": x_test})[0]
    accuracy = float((logits.argmax(1) == y_test).mean())
    assert accuracy >= 0.95, f"digits CNN only reached {accuracy:.4f}"
    np.savez_compressed(DATA / "digits_test.npz", x=x_test, y=y_test)
    meta = {
        "float_accuracy": accuracy,
        "n_test": len(y_test),
        "split": "sklearn load_digits, images / 16, train_test_split(test_size=0.25, stratify=y, seed 0)",
        "measured_with": f"onnxruntime {ort.__version__} on digits_cnn.onnx",
    }
    (DATA / "digits_cnn.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"digits_cnn: float test accuracy {accuracy:.4f} on {len(y_test)} samples")


def main() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    DATA.mkdir(parents=True, exist_ok=True)
    image = torch.randn(1, 3, 32, 32)
    resnet = ResNetSmall()
    _randomize_batchnorm(resnet)
    _export(resnet, image, "resnet_small", "input", "logits", {0: "batch"})
    mobilenet = MobileNetSmall()
    _randomize_batchnorm(mobilenet)
    _export(mobilenet, image, "mobilenet_small", "input", "logits", {0: "batch"})
    _export(UNetSmall(), image, "unet_small", "images", "mask", {0: "batch", 2: "height", 3: "width"})
    mlp = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    _export(mlp, torch.randn(1, 32), "mlp_small", "features", "logits", {0: "batch"})
    _make_digits()


if __name__ == "__main__":
    main()
