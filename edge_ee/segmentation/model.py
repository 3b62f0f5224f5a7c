"""Early-exit segmentation network for CamVid 120x160 whose later stages are token-wise.

Layout: a small conv stem (two stride-2 3x3 convs, then a `stem_last_kernel` conv)
downsamples the image by 4 to a 30x40 grid of tokens with `token_channels` features;
then `len(blocks_per_stage)` stages of `TokenBlock`s, each stage followed by an exit
(a 1x1 classifier per token; bilinear upsampling to full resolution happens only when a
full-resolution map is needed).

A `TokenBlock` is `x + MLP(BN(dwconv(x)))`: the depthwise conv (`mix`) is the only
spatial operation and is cheap, so it always runs densely over the whole grid (stopped
tokens keep their last feature and serve as its neighbours). The MLP (`mlp`, two
`Linear`s on channels) is position-wise, so it can run on a gathered subset of tokens
and be scattered back — that is where pixel-level early exit saves real time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from device_runners.manifest import sha256_file
from edge_ee.models.weights import save_with_sidecar, sidecar_digest
from edge_ee.segmentation.errors import SegmentationError

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_FILE = ASSET_DIR / "camvid_eeseg.pt"


@dataclass(frozen=True)
class SegNetConfig:
    """Architecture of `EarlyExitSegNet` (defaults = the shipped CamVid weights)."""

    num_classes: int = 11
    image_hw: tuple[int, int] = (120, 160)
    stem_channels: tuple[int, int] = (24, 48)
    token_channels: int = 64
    mlp_ratio: int = 4
    stem_last_kernel: int = 1
    dw_kernel: int = 5
    blocks_per_stage: tuple[int, ...] = field(default=(1, 1, 2, 2))

    @property
    def token_hw(self) -> tuple[int, int]:
        h, w = self.image_hw
        return (h + 3) // 4, (w + 3) // 4

    @property
    def num_exits(self) -> int:
        return len(self.blocks_per_stage)


def tokens_of(x: torch.Tensor) -> torch.Tensor:
    """(B,C,h,w) → (B,h*w,C)."""
    return x.flatten(2).transpose(1, 2)


def grid_of(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B,h*w,C) → (B,C,h,w)."""
    b, _, c = t.shape
    return t.transpose(1, 2).reshape(b, c, hw[0], hw[1])


class TokenBlock(nn.Module):
    """`x + mlp(mix(x))` with a dense depthwise `mix` and a position-wise `mlp`."""

    def __init__(self, channels: int, mlp_ratio: int, dw_kernel: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, dw_kernel, padding=dw_kernel // 2,
                            groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc1 = nn.Linear(channels, channels * mlp_ratio)
        self.fc2 = nn.Linear(channels * mlp_ratio, channels)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Dense spatial part on the grid (B,C,h,w) → (B,C,h,w)."""
        return self.bn(self.dw(x))

    def mlp(self, t: torch.Tensor) -> torch.Tensor:
        """Position-wise part on tokens (..., C) → (..., C)."""
        return self.fc2(F.relu(self.fc1(t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = (x.shape[2], x.shape[3])
        return x + grid_of(self.mlp(tokens_of(self.mix(x))), hw)


def _conv_bn_relu(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EarlyExitSegNet(nn.Module):
    """Stem → [stage_i → exit_i] for each stage; `forward` returns token-level logits per exit."""

    def __init__(self, config: SegNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or SegNetConfig()
        self.config = cfg
        c1, c2 = cfg.stem_channels
        c = cfg.token_channels
        self.stem = nn.Sequential(_conv_bn_relu(3, c1, 2), _conv_bn_relu(c1, c2, 2),
                                  _conv_bn_relu(c2, c, 1, cfg.stem_last_kernel))
        self.stages = nn.ModuleList(
            nn.ModuleList(TokenBlock(c, cfg.mlp_ratio, cfg.dw_kernel) for _ in range(n))
            for n in cfg.blocks_per_stage)
        self.exits = nn.ModuleList(nn.Linear(c, cfg.num_classes) for _ in cfg.blocks_per_stage)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B,3,H,W) normalised → list of exit logits (B,K,h,w) at token resolution."""
        check_image_tensor(images, self.config.image_hw)
        x = self.stem(images)
        hw = (x.shape[2], x.shape[3])
        outs: list[torch.Tensor] = []
        for blocks, head in zip(self.stages, self.exits, strict=True):
            for blk in blocks:
                x = blk(x)
            outs.append(grid_of(head(tokens_of(x)), hw))
        return outs


def check_image_tensor(images: torch.Tensor, image_hw: tuple[int, int]) -> None:
    """Raise `SegmentationError` unless images are float (B,3,H,W) of the configured size."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise SegmentationError(
            f"images must be float (B,3,H,W), got {images.dtype} {tuple(images.shape)}; "
            "use data.normalize_images")
    if tuple(images.shape[2:]) != tuple(image_hw):
        raise SegmentationError(
            f"images are {tuple(images.shape[2:])}, the network expects {tuple(image_hw)}")


def upsample_logits(logits: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of (B,K,h,w) token logits to full resolution."""
    return F.interpolate(logits, size=image_hw, mode="bilinear", align_corners=False)


def save_weights(model: EarlyExitSegNet, path: Path = WEIGHTS_FILE) -> str:
    """Save the state_dict plus its config and write `<path>.sha256`; returns the digest."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = asdict(model.config)
    digest = save_with_sidecar({"state_dict": sd, "config": {
        k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}, path)
    return digest


def load_pretrained(path: Path = WEIGHTS_FILE, expected_sha256: str | None = None
                    ) -> EarlyExitSegNet:
    """Load shipped weights (eval mode) after checking their sha256 against the sidecar file."""
    if not path.is_file():
        raise SegmentationError(f"weights {path} not found; train them with "
                                "`python -m edge_ee.segmentation.train`")
    if expected_sha256 is None:
        expected_sha256 = sidecar_digest(path, SegmentationError)
    got = sha256_file(path)
    if got != expected_sha256:
        raise SegmentationError(f"{path} sha256 {got} != expected {expected_sha256}; "
                                "the file is corrupt or replaced — retrain or restore it")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = SegNetConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in blob["config"].items()})
    model = EarlyExitSegNet(cfg)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise SegmentationError(f"weights in {path} do not fit the architecture: {exc}") from exc
    return model.eval()
