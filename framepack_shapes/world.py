"""A procedural video world for training and testing a small FramePack model: moving shapes, with captions.

Everything here is deterministic and stands in for the parts of the real pipeline a CPU cannot run:

- ``ClipSpec`` / ``render_clip``: clips of 32x32 px frames with one or two coloured shapes (solid or
  striped) that move in straight lines and bounce off the frame edges, over a slowly panning textured
  background, sometimes behind a grey bar (occlusion). A clip is a pure function of its parameters, so the
  true continuation of any clip can be rendered for any number of frames (the drift experiment's reference).
- ``encode_frames`` / ``decode_latents``: a fixed linear "VAE" with HunyuanVideo's latent layout, 16 channels.
  Each 4x4 px block is turned into an opponent colour space (one luminance, two colour-difference axes) and a
  4x4 orthonormal DCT, and the 16 lowest frequencies are kept: the 10 luminance coefficients with u + v <= 3
  and the 3 lowest of each colour axis (JPEG-like chroma subsampling). A 32x32 frame becomes a 16x8x8
  latent, one latent frame per video frame. Decoding is the exact transpose, so ``encode(decode(z)) == z``
  and ``decode(encode(x))`` keeps everything but the dropped high frequencies (the 32x32 frames of flat shapes
  come back slightly soft, clearly recognisable). The coefficients are shifted and scaled by fixed constants
  so that the latents have about zero mean and unit overall variance, as the real latents times 0.476986 do.
- ``encode_caption``: a fixed bag-of-words text encoder (each word a fixed random vector, plus a position
  vector so "red square ... blue circle" binds colours to shapes); pooled = mean of the word vectors.
- ``image_embeddings``: the start latent's 2x2 patches as 16 "SigLIP" tokens of 64 channels.

Time: one latent frame per video frame. The project's section math counts 4 pixel frames per latent frame at
30 fps, so these videos play at ``FPS`` = 7.5 latent frames per second: a 10 s video is
``section_count(10, 3)`` = 25 sections of 3 frames, as for the real model.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import zlib

import torch
import torch.nn.functional as F

from framepack_core.engine.conditioning import TextConditioning
from framepack_core.errors import InputError

FRAME_SIZE = 32
BLOCK = 4
LATENT_SIZE = FRAME_SIZE // BLOCK
LATENT_CHANNELS = 16
TEXT_DIM = 32
IMAGE_TOKEN_DIM = 64
FPS = 7.5

COLOURS = {
    "red": (0.90, 0.12, 0.10), "green": (0.10, 0.80, 0.20), "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10), "white": (0.95, 0.95, 0.95), "magenta": (0.90, 0.15, 0.85),
    "cyan": (0.10, 0.85, 0.90), "orange": (0.98, 0.55, 0.05),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS = {"slowly": 1.0, "quickly": 2.0}  # pixels per frame: 3-6 px per 3-frame section, clearly visible
PAN_SPEED = 0.3
OCCLUDER_GREY = (0.55, 0.55, 0.55)
# Most clips have one object: a second one (and its occlusions) is rarer, so a model trained for minutes on
# a CPU learns the single-object motion well (a first run with 1/3 two-object clips and smaller, faster
# stripes kept its objects only as blobs).
TWO_OBJECTS = 0.2
SPLITS = ("train", "test")
# The opt-in variant of the LoRA experiment (``colour_on_bounce``): at every bounce an object takes the next colour
# of this cycle, each clearly unlike the one before it. The default world never changes colour.
BOUNCE_COLOURS = ("red", "cyan", "yellow", "blue", "orange", "green", "magenta", "white")

# The kept DCT coefficients (colour axis, u, v): low frequencies first, luminance in more detail.
COEFFICIENTS = tuple([(0, u, v) for s in range(4) for u in range(s + 1) for v in range(s + 1) if u + v == s]
                     + [(axis, u, v) for axis in (1, 2) for u, v in ((0, 0), (0, 1), (1, 0))])
# Latents are (coefficient - shift) / scale. The shift removes the mean luminance of the training clips; the
# scale is one number for all channels, which brings the overall variance to about 1 (measured over 400
# training clips with ``latent_statistics``; a test checks it still holds). It is deliberately not per channel:
# whitening would give the fine detail the same signal-to-noise ratio as the coarse layout, whereas keeping
# the low frequencies stronger (as in natural-image latents) lets diffusion place the shapes before their
# texture. A first training run with whitened latents produced shapes buried in blocky high-frequency noise.
LATENT_SHIFT = (-3.7,) + (0.0,) * (LATENT_CHANNELS - 1)
LATENT_SCALE = (0.67,) * LATENT_CHANNELS
# An orthonormal opponent colour basis: luminance, red-green, yellow-blue (rows).
OPPONENT = torch.tensor([[1 / math.sqrt(3)] * 3,
                         [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                         [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])


# ------------------------------------------------------------------------------------------- clip parameters

@dataclasses.dataclass(frozen=True)
class MovingShape:
    """One object: centre (x, y) in pixels at frame 0, radius, moving in ``direction`` at ``speed``."""

    shape: str
    colour: str
    striped: bool
    radius: float
    x: float
    y: float
    direction: str
    speed: str

    @property
    def velocity(self) -> tuple:
        dx, dy = DIRECTIONS[self.direction]
        return dx * SPEEDS[self.speed], dy * SPEEDS[self.speed]

    def describe(self) -> str:
        texture = "striped " if self.striped else ""
        return f"{self.colour} {texture}{self.shape} moves {self.direction} {self.speed}"


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything that defines a clip: objects (drawn in order), background, pan and an optional occluder."""

    objects: tuple
    background: tuple
    texture_period: float
    pan: str | None
    occluder: tuple | None  # ("vertical" | "horizontal", position in px)
    colour_on_bounce: bool = False  # the variant world: objects change colour when they bounce

    @property
    def caption(self) -> str:
        parts = [obj.describe() for obj in self.objects]
        text = " and ".join(parts)
        return text + (f", background pans {self.pan}" if self.pan else "")


def sample_clip(seed: int, split: str = "train", colour_on_bounce: bool = False) -> ClipSpec:
    """The clip with number ``seed`` of a split; the test split never repeats a training clip's parameters.
    ``colour_on_bounce`` gives the same clip in the variant world, where objects change colour at every bounce."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}.")
    rng = random.Random(f"{split}:{seed}")
    colours = rng.sample(sorted(COLOURS), 2)
    objects = tuple(sample_object(rng, colour) for colour in colours[:1 + (rng.random() < TWO_OBJECTS)])
    hue = rng.random()
    background = tuple(0.18 + 0.14 * math.cos(2 * math.pi * (hue + k / 3)) for k in range(3))
    pan = rng.choice((None, *DIRECTIONS))
    occluder = (rng.choice(("vertical", "horizontal")), rng.uniform(8, FRAME_SIZE - 8)) if rng.random() < 0.3 else None
    return ClipSpec(objects, background, rng.uniform(10.0, 16.0), pan, occluder, colour_on_bounce)


def sample_object(rng: random.Random, colour: str) -> MovingShape:
    radius = rng.uniform(5.0, 7.0)
    return MovingShape(shape=rng.choice(SHAPES), colour=colour, striped=rng.random() < 0.25, radius=radius,
                       x=rng.uniform(radius, FRAME_SIZE - radius), y=rng.uniform(radius, FRAME_SIZE - radius),
                       direction=rng.choice(sorted(DIRECTIONS)), speed=rng.choice(sorted(SPEEDS)))


# ------------------------------------------------------------------------------------------- rendering

def render_clip(spec: ClipSpec, frames: int, start: int = 0) -> torch.Tensor:
    """Frames ``start .. start+frames-1`` of a clip as (frames, 3, 32, 32) RGB in [-1, 1]."""
    if frames < 1 or start < 0:
        raise InputError(f"render_clip needs frames >= 1 and start >= 0, got frames={frames}, start={start}.")
    t = torch.arange(start, start + frames, dtype=torch.float32)[:, None, None]
    coords = torch.arange(FRAME_SIZE, dtype=torch.float32) + 0.5
    y, x = coords[:, None], coords[None, :]
    image = background(spec, t, y, x)
    for obj in spec.objects:
        image = over(image, *draw_object(obj, t, y, x, spec.colour_on_bounce))
    if spec.occluder is not None:
        alpha = occluder_alpha(spec.occluder, y, x).expand(len(t), -1, -1)
        image = over(image, alpha, torch.tensor(OCCLUDER_GREY))
    return image.clamp(0, 1) * 2 - 1


def background(spec: ClipSpec, t, y, x) -> torch.Tensor:
    """A soft checker texture in the background colour, shifted by the pan."""
    dx, dy = DIRECTIONS[spec.pan] if spec.pan else (0.0, 0.0)
    u, v = x - dx * PAN_SPEED * t, y - dy * PAN_SPEED * t
    k = 2 * math.pi / spec.texture_period
    texture = 0.10 * torch.sin(k * u) * torch.sin(k * v) + 0.04 * torch.sin(0.5 * k * (u + v))
    base = torch.tensor(spec.background)[None, :, None, None]
    return base + texture[:, None]


def bounce(start: float, velocity: float, t: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Position at times t of a point moving at ``velocity`` that reflects off ``low`` and ``high``."""
    span = high - low
    u = torch.remainder(start - low + velocity * t, 2 * span)
    return low + torch.where(u <= span, u, 2 * span - u)


def bounce_count(start: float, velocity: float, t: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """How many times the point of ``bounce`` has reflected off ``low`` or ``high`` by the times t."""
    if velocity == 0:
        return torch.zeros_like(t, dtype=torch.long)
    laps = torch.floor((start - low + velocity * t) / (high - low)).long()
    return laps if velocity > 0 else -laps


def object_colours(obj: MovingShape, t: torch.Tensor, colour_on_bounce: bool) -> torch.Tensor:
    """(T, 3) colour of an object per frame: its own, or in the variant world the next of the cycle per bounce."""
    if not colour_on_bounce:
        return torch.tensor(COLOURS[obj.colour]).expand(len(t), 3)
    vx, vy = obj.velocity
    frames = t.flatten()
    bounces = (bounce_count(obj.x, vx, frames, obj.radius, FRAME_SIZE - obj.radius)
               + bounce_count(obj.y, vy, frames, obj.radius, FRAME_SIZE - obj.radius))
    cycle = torch.tensor([COLOURS[name] for name in BOUNCE_COLOURS])
    return cycle[(BOUNCE_COLOURS.index(obj.colour) + bounces) % len(BOUNCE_COLOURS)]


def draw_object(obj: MovingShape, t, y, x, colour_on_bounce: bool = False):
    """(alpha (T, H, W), colour (T, 3, H, W)) of one object, anti-aliased over one pixel."""
    vx, vy = obj.velocity
    cx = bounce(obj.x, vx, t, obj.radius, FRAME_SIZE - obj.radius)
    cy = bounce(obj.y, vy, t, obj.radius, FRAME_SIZE - obj.radius)
    dx, dy = x - cx, y - cy
    if obj.shape == "circle":
        distance = torch.sqrt(dx * dx + dy * dy) - obj.radius
    elif obj.shape == "square":
        distance = torch.maximum(dx.abs(), dy.abs()) - obj.radius * 0.85
    else:  # an upward triangle: the largest of its three edge distances
        r = obj.radius
        distance = torch.maximum(dy - 0.5 * r, dx.abs() * 0.866 - dy * 0.5 - 0.5 * r)
    alpha = (0.5 - distance).clamp(0, 1)
    colour = object_colours(obj, t, colour_on_bounce)[:, :, None, None].expand(len(t), 3, FRAME_SIZE, FRAME_SIZE)
    if obj.striped:
        # Stripes move with the object, so they show its motion even where its outline is occluded.
        stripes = (torch.sin(2 * math.pi * (dx + dy) / 6.0) > 0).float()
        colour = colour * (1 - 0.45 * stripes[:, None])
    return alpha, colour


def occluder_alpha(occluder: tuple, y, x) -> torch.Tensor:
    orientation, position = occluder
    coordinate = x if orientation == "vertical" else y
    alpha = (2.5 - (coordinate - position).abs()).clamp(0, 1)
    return alpha.expand(FRAME_SIZE, FRAME_SIZE)[None]


def over(image, alpha, colour) -> torch.Tensor:
    """Alpha-composite ``colour`` over ``image``; colour is (3,) or (T, 3, H, W)."""
    if colour.ndim == 1:
        colour = colour[None, :, None, None]
    alpha = alpha[:, None]
    return image * (1 - alpha) + colour * alpha


# ------------------------------------------------------------------------------------------- the fixed "VAE"

def dct_matrix(n: int = BLOCK) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (rows = frequencies): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def codec_basis() -> torch.Tensor:
    """(16, 3, 4, 4): each latent channel's pixel pattern in one block (orthonormal rows when flattened)."""
    d = dct_matrix()
    return torch.stack([OPPONENT[axis][:, None, None] * (d[u][:, None] * d[v][None, :]) for axis, u, v in COEFFICIENTS])


def encode_frames(frames: torch.Tensor) -> torch.Tensor:
    """RGB frames (T, 3, 32, 32) or (B, T, 3, 32, 32) in [-1, 1] -> latents (B, 16, T, 8, 8) in model space."""
    shift, scale = channel_constants()
    return (block_coefficients(frames) - shift) / scale


def decode_latents(latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, 16, T, 8, 8) -> RGB frames (B, T, 3, 32, 32), not clamped."""
    if latents.ndim != 5 or latents.shape[1] != LATENT_CHANNELS or latents.shape[-2:] != (LATENT_SIZE, LATENT_SIZE):
        raise InputError(f"decode_latents takes (B, {LATENT_CHANNELS}, T, {LATENT_SIZE}, {LATENT_SIZE}) latents, "
                         f"got {tuple(latents.shape)}.")
    shift, scale = channel_constants()
    batch, _, time = latents.shape[:3]
    coefficients = (latents.float() * scale + shift).transpose(1, 2)
    flat = coefficients.reshape(batch * time, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    frames = F.conv_transpose2d(flat, codec_basis(), stride=BLOCK)
    return frames.reshape(batch, time, 3, FRAME_SIZE, FRAME_SIZE)


def block_coefficients(frames: torch.Tensor) -> torch.Tensor:
    """The kept DCT coefficients of every 4x4 block, unscaled: (B, 16, T, 8, 8)."""
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2:] != (3, FRAME_SIZE, FRAME_SIZE):
        raise InputError(f"encode_frames takes (T, 3, {FRAME_SIZE}, {FRAME_SIZE}) or (B, T, 3, {FRAME_SIZE}, "
                         f"{FRAME_SIZE}) frames in [-1, 1], got {tuple(frames.shape)}.")
    batch, time = frames.shape[:2]
    flat = frames.reshape(batch * time, 3, FRAME_SIZE, FRAME_SIZE).float()
    coefficients = F.conv2d(flat, codec_basis(), stride=BLOCK)
    return coefficients.reshape(batch, time, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE).transpose(1, 2)


def channel_constants() -> tuple:
    """(shift, scale) broadcastable over (B, 16, T, 8, 8)."""
    as_tensor = lambda values: torch.tensor(values)[None, :, None, None, None]  # noqa: E731
    return as_tensor(LATENT_SHIFT), as_tensor(LATENT_SCALE)


def latent_statistics(seeds: range) -> tuple:
    """Per-channel (mean, std) of the unscaled coefficients over the training clips ``seeds`` (16 frames each)."""
    frames = torch.stack([render_clip(sample_clip(seed), 16) for seed in seeds])
    coefficients = block_coefficients(frames).transpose(0, 1).reshape(LATENT_CHANNELS, -1)
    return coefficients.mean(dim=1), coefficients.std(dim=1)


# ------------------------------------------------------------------------------------------- conditioning

def word_vector(word: str, salt: str = "word") -> torch.Tensor:
    """A fixed unit-variance random vector for a word (or any string), the same on every machine."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{salt}:{word}".encode()))
    return torch.randn(TEXT_DIM, generator=generator)


def caption_words(caption: str) -> list:
    words = re.findall(r"[a-z]+", caption.lower())
    if not words:
        raise InputError(f"caption {caption!r} has no words; describe the clip, e.g. 'red square moves left slowly'.")
    return words


def encode_caption(caption: str) -> TextConditioning:
    """A caption -> TextConditioning: tokens = word vector + 0.5 x position vector; pooled = mean word vector."""
    words = caption_words(caption)
    vectors = torch.stack([word_vector(w) for w in words])
    positions = torch.stack([word_vector(str(i), salt="position") for i in range(len(words))])
    text = (vectors + 0.5 * positions)[None]
    return TextConditioning(text, torch.ones(1, len(words), dtype=torch.bool), vectors.mean(dim=0)[None])


def batch_captions(captions: list) -> TextConditioning:
    """Several captions as one batch, zero-padded to the longest with the mask marking real tokens."""
    conds = [encode_caption(c) for c in captions]
    length = max(c.text.shape[1] for c in conds)
    text = torch.stack([F.pad(c.text[0], (0, 0, 0, length - c.text.shape[1])) for c in conds])
    mask = torch.stack([F.pad(c.mask[0], (0, length - c.mask.shape[1])) for c in conds])
    return TextConditioning(text, mask, torch.cat([c.pooled for c in conds]))


def image_embeddings(start_latent: torch.Tensor) -> torch.Tensor:
    """Start latents (B, 16, 1, 8, 8) -> (B, 16, 64) image tokens: the latent's 2x2 patches, flattened."""
    patches = F.pixel_unshuffle(start_latent[:, :, 0], 2)  # (B, 64, 4, 4)
    return patches.flatten(2).transpose(1, 2).contiguous()
