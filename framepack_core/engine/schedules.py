"""Frame-context schedules: which history frames are packed with which patchify kernel (paper section 8.1/8.3).

A schedule is written in the paper's notation, tokens joined by ``_`` in time order (earlier frames left):

- ``fNkM``: N latent frames packed with kernel kM = (M, 2M, 2M); several may share one token
  (``f16k4f2k2f1k1``). The full form ``fNkThHwW`` names any power-of-two kernel (T, H, W), e.g. ``k1h4w4``.
- ``g`` / ``gN``: the generated (noisy) window of N latent frames. A bare ``g`` takes the latent window size;
  a ``gN`` must agree with an explicitly given latent window size, or defines it when none is given.
- ``x``: skip. The next group starts at the nearest frame already generated beyond the not-yet-generated gap
  (in inverted mode: the start image); the gap becomes blank RoPE positions ("RoPE random access").
- ``td`` / ``ta`` / ``tc``: the tail of one side (frames beyond its groups) is deleted, appended (each tail
  frame pooled to kernel (1, 32, 32)) or compressed (all tail frames averaged into one frame, packed with the
  side's outermost kernel). Groups beyond a tail are *anchors*: the video's first (left) or last (right) frames,
  e.g. F1's start anchor ``f1k1_td_f16k4f2k2f1k1_g9``.

Each side of the window is read outward from ``g``: groups next to the window hold the adjacent frames
(nearest first), ``x`` jumps over the unknown gap, a tail closes the side. The released checkpoints have the
projections k1 = (1,2,2), k2 = (2,4,4) and k4 = (4,8,8); any other kernel is realised by average-pooling the
latents with ``Kernel.pre_pool`` and then using the projection ``Kernel.proj`` (k8 = pool (2,2,2) + k4).
Token counts assume that pooling and patchifying replicate-pad to multiples (as ``packing.pack_group`` does).
"""

from __future__ import annotations

import dataclasses
import math
import re

from ..errors import FramePackError
from ..model.config import CLEAN_PROJECTIONS

MODES = ("vanilla", "anti_drifting", "inverted_anti_drifting")
DEFAULT_LATENT_WINDOW_SIZE = 9
# One limit for the node and the core. 33 is the range of the reference demo's slider (and of the other FramePack
# nodes). A section's tokens grow with the window and its attention with their square: at the 640 buckets a
# window of 33 has 54k tokens against 17.5k at the trained 9 (9.5x the attention), far outside what was trained.
MAX_LATENT_WINDOW_SIZE = 33
MAX_GROUP_FRAMES = 1024
MAX_KERNEL_SIZE = 1024
# Released layouts have 3-5 groups; every group costs a projection call and a RoPE table per section, so a
# schedule of thousands (8 KB of text) would make each step take minutes. Longer text is refused before parsing.
MAX_SCHEDULE_GROUPS = 256
MAX_SCHEDULE_CHARS = 2048
TAILS = {"td": "delete", "ta": "append", "tc": "compress"}
# Temporal kernel factor -> (label, module name) of the trained projections (the model config's one mapping).
PROJECTIONS = {p.kernel[0]: (p.label, p.name) for p in CLEAN_PROJECTIONS}
NAMED = ("default", "standard", "inverted", "uniform")
UNIFORM_DEFAULT = ("k2", 12)
APPEND_TAIL_KERNEL = (1, 32, 32)

GROUP, GENERATE, SKIP, TAIL = "group", "generate", "skip", "tail"

ALLOWED = (
    "A schedule is tokens joined by '_' in time order: 'fNkM' = N latent frames with kernel kM "
    "(M a power of two: k1=(1,2,2), k2=(2,4,4), k4=(4,8,8), k8=(8,16,16)...; full form kThHwW; several groups may "
    "share a token, e.g. 'f16k4f2k2f1k1'), 'g' or 'gN' = the generated window (exactly one), 'x' = skip, "
    "'td'/'ta'/'tc' = tail delete/append/compress (after the groups of its side). "
    "Named schedules: default, standard, inverted, uniform[:kM[:N]]. "
    "Example: 'f1k1_x_g9_f1k1f2k2f16k4_td'.")


class ScheduleError(FramePackError):
    """A frame schedule is malformed or does not fit the sampling mode; the message points at the bad token."""

    def __init__(self, problem: str, text: str | None = None, position: int | None = None, length: int = 1):
        self.problem, self.text, self.position = problem, text, position
        message = f"invalid frame schedule {text!r}: {problem}" if text is not None else f"invalid frame schedule: {problem}"
        if text is not None and position is not None:
            message += f" (at character {position + 1})\n    {text}\n    {' ' * position}{'^' * max(length, 1)}"
        super().__init__(f"{message}\n{ALLOWED}")


class ModeError(FramePackError):
    """An unknown sampling mode."""


def check_mode(mode) -> str:
    if mode not in MODES:
        raise ModeError(f"unknown sampling mode {mode!r}; valid modes are: {', '.join(MODES)}.")
    return mode


def _power_of_two(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A patchify kernel (t, h, w) in latent frames / pixels, realised as ``pre_pool`` then projection ``proj``."""

    t: int
    h: int
    w: int

    def __post_init__(self):
        for v in (self.t, self.h, self.w):
            if not isinstance(v, int) or not _power_of_two(v) or v > MAX_KERNEL_SIZE:
                raise ScheduleError(f"kernel {self.size} must be powers of two up to {MAX_KERNEL_SIZE}")
        if self.h < 2 or self.w < 2:
            raise ScheduleError(f"kernel {self.size}: h and w must be at least 2 (the smallest projection is 1x2x2)")

    @classmethod
    def k(cls, factor: int) -> "Kernel":
        """The paper's kM = (M, 2M, 2M)."""
        return cls(factor, 2 * factor, 2 * factor)

    @property
    def size(self) -> tuple[int, int, int]:
        return (self.t, self.h, self.w)

    @property
    def name(self) -> str:
        return f"k{self.t}" if self.h == self.w == 2 * self.t else f"k{self.t}h{self.h}w{self.w}"

    @property
    def _factor(self) -> int:
        return min(self.t, self.h // 2, self.w // 2, 4)

    @property
    def proj(self) -> str:
        """The trained projection used: '1x' (1,2,2), '2x' (2,4,4) or '4x' (4,8,8)."""
        return PROJECTIONS[self._factor][0]

    @property
    def proj_name(self) -> str:
        """The ``clean_x_embedder`` attribute of that projection: 'proj', 'proj_2x' or 'proj_4x'."""
        return PROJECTIONS[self._factor][1]

    @property
    def pre_pool(self) -> tuple[int, int, int]:
        """Average-pool factor applied to the latents before the projection; (1, 1, 1) for k1/k2/k4."""
        a = self._factor
        return (self.t // a, self.h // (2 * a), self.w // (2 * a))

    @property
    def rope_pool(self) -> tuple[int, int, int]:
        """Pooling of the RoPE table on the post-patch (1x2x2) grid."""
        return (self.t, self.h // 2, self.w // 2)

    def tokens(self, frames: int, height: int, width: int) -> int:
        """Tokens of ``frames`` latent frames of size (height, width) packed with this kernel."""
        if frames <= 0:
            return 0
        return math.ceil(frames / self.t) * math.ceil(height / self.h) * math.ceil(width / self.w)


@dataclasses.dataclass(frozen=True)
class Segment:
    """One element of a schedule, in time order.

    ``kind`` is 'group' (``frames`` with ``kernel``), 'generate' (``frames`` = window), 'skip' or 'tail'
    (``tail`` in td/ta/tc). ``side`` is 'left', 'right' or 'window'; a group's ``placement`` is 'adjacent'
    (frames next to the window), 'after_skip' (frames after an ``x``) or 'anchor' (the video's end frames,
    beyond a tail). ``side`` and ``placement`` are filled in by ``Schedule``.
    """

    kind: str
    frames: int = 0
    kernel: Kernel | None = None
    tail: str | None = None
    side: str = ""
    placement: str = ""

    @property
    def token(self) -> str:
        if self.kind == GROUP:
            return f"f{self.frames}{self.kernel.name}"
        if self.kind == GENERATE:
            return f"g{self.frames}" if self.frames else "g"
        return "x" if self.kind == SKIP else self.tail


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str
    segments: tuple
    pos: int | None = None
    text: str = ""


def _annotate(tokens: list, text: str | None) -> tuple:
    """Check the structure (one window; per side: groups, skips, at most one tail, anchors) and label segments."""
    windows = [i for i, t in enumerate(tokens) if t.kind == GENERATE]
    if not windows:
        raise ScheduleError("no generated window: add one 'g' or 'gN' token", text, len(text) if text else None)
    if len(windows) > 1:
        t = tokens[windows[1]]
        raise ScheduleError(f"the generated window appears twice ({tokens[windows[0]].text or 'g'} and "
                            f"{t.text or 'g'}); use exactly one 'g' token", text, t.pos, len(t.text))
    w = windows[0]
    labelled = {}
    for side, outward in (("left", list(reversed(tokens[:w]))), ("right", tokens[w + 1:])):
        last, tailed, skipped = None, False, False
        for tok in outward:
            here = dict(text=text, position=tok.pos, length=len(tok.text))
            if tok.kind == GROUP:
                placement = "anchor" if tailed else "after_skip" if skipped else "adjacent"
                labelled[id(tok)] = tuple(dataclasses.replace(s, side=side, placement=placement) for s in tok.segments)
            elif tok.kind == SKIP:
                if tailed:
                    raise ScheduleError("'x' cannot follow a tail: beyond a tail only anchor groups may come", **here)
                if last == SKIP:
                    raise ScheduleError("two skips in a row; one 'x' already skips the whole gap", **here)
                skipped = True
            elif tok.kind == TAIL:
                if tailed:
                    raise ScheduleError(f"second tail {tok.text or tok.segments[0].tail!r} on the {side} side; "
                                        "each side has at most one tail", **here)
                if last != GROUP:
                    raise ScheduleError(f"tail {tok.text or tok.segments[0].tail!r} in the middle: a tail closes the "
                                        "history of its side, so it must come after (outward of) a group, e.g. "
                                        "'td_f16k4_g9' or 'g9_f1k1_td'", **here)
                tailed = True
            labelled.setdefault(id(tok), tuple(dataclasses.replace(s, side=side) for s in tok.segments))
            last = tok.kind
        if last == SKIP:
            tok = outward[-1]
            raise ScheduleError("'x' with no group beyond it: a skip must lead to a group (e.g. 'g9_x_f1k1')",
                                text, tok.pos, 1)
    labelled[id(tokens[w])] = tuple(dataclasses.replace(s, side="window") for s in tokens[w].segments)
    return tuple(s for tok in tokens for s in labelled[id(tok)])


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A frame-context layout: ``segments`` in time order, the window size and a display name."""

    segments: tuple
    latent_window_size: int = DEFAULT_LATENT_WINDOW_SIZE
    name: str = "custom"

    def __post_init__(self):
        w = self.latent_window_size
        if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= MAX_LATENT_WINDOW_SIZE:
            raise ScheduleError(f"latent_window_size must be an integer from 1 to {MAX_LATENT_WINDOW_SIZE}, got {w!r}")
        if not isinstance(self.segments, (tuple, list)) or len(self.segments) > 2 * MAX_SCHEDULE_GROUPS:
            count = len(self.segments) if isinstance(self.segments, (tuple, list)) else type(self.segments).__name__
            raise ScheduleError(f"a schedule takes a tuple of at most {2 * MAX_SCHEDULE_GROUPS} segments, got {count}")
        segments = []
        for s in self.segments:
            if s.kind == GENERATE:
                if s.frames not in (0, w):
                    raise ScheduleError(f"window g{s.frames} disagrees with latent_window_size {w}")
                s = dataclasses.replace(s, frames=w)
            elif s.kind == GROUP and not (isinstance(s.frames, int) and 1 <= s.frames <= MAX_GROUP_FRAMES
                                          and isinstance(s.kernel, Kernel)):
                raise ScheduleError(f"group {s} needs 1 to {MAX_GROUP_FRAMES} frames and a Kernel")
            elif s.kind == TAIL and s.tail not in TAILS:
                raise ScheduleError(f"unknown tail {s.tail!r}; use td, ta or tc")
            elif s.kind not in (GROUP, GENERATE, SKIP, TAIL):
                raise ScheduleError(f"unknown segment kind {s.kind!r}")
            segments.append(s)
        tokens = [_Token(s.kind, (s,)) for s in segments]
        object.__setattr__(self, "segments", _annotate(tokens, None))

    @property
    def window_position(self) -> int:
        return next(i for i, s in enumerate(self.segments) if s.kind == GENERATE)

    @property
    def left(self) -> tuple:
        return self.segments[:self.window_position]

    @property
    def right(self) -> tuple:
        return self.segments[self.window_position + 1:]

    @property
    def groups(self) -> tuple:
        return tuple(s for s in self.segments if s.kind == GROUP)

    def side_tail(self, side: str) -> str | None:
        return next((s.tail for s in self.segments if s.kind == TAIL and s.side == side), None)

    @property
    def tail(self) -> str:
        """The tail option: the explicit one (left side first), or 'td' (drop) when none is written."""
        return self.side_tail("left") or self.side_tail("right") or "td"

    def tail_kernel(self, side: str) -> Kernel | None:
        """Kernel of a side's 'ta'/'tc' tail (None for 'td' or no tail)."""
        tail = self.side_tail(side)
        if tail == "ta":
            return Kernel(*APPEND_TAIL_KERNEL)
        if tail == "tc":
            inner = self.left[::-1] if side == "left" else self.right
            return next(s.kernel for s in reversed(inner[:[s.kind for s in inner].index(TAIL)]) if s.kind == GROUP)
        return None

    def token_spans(self) -> list[tuple[str, int, tuple]]:
        """(token text, start character, segments) of the canonical text; adjacent groups of a run share a token."""
        spans, pos = [], 0
        for s in self.segments:
            if spans and s.kind == GROUP and spans[-1][2][-1].kind == GROUP and \
                    (spans[-1][2][-1].side, spans[-1][2][-1].placement) == (s.side, s.placement):
                text, start, segs = spans[-1]
                spans[-1] = (text + s.token, start, segs + (s,))
                pos += len(s.token)
                continue
            if spans:
                pos += 1
            spans.append((s.token, pos, (s,)))
            pos += len(s.token)
        return spans

    @property
    def text(self) -> str:
        """The canonical paper-notation string."""
        return "_".join(t for t, _, _ in self.token_spans())

    def context_tokens(self, height: int, width: int, tail_frames: int = 0) -> int:
        return context_tokens(self, height, width, tail_frames)

    def __str__(self) -> str:
        return self.text


_GROUP_RE = re.compile(r"f(\d+)k(\d+)(?:h(\d+)w(\d+))?")


def _number(digits: str, what: str, text: str, pos: int, low: int, high: int) -> int:
    if len(digits) > 7 or not low <= int(digits) <= high:
        why = "zero frames" if digits.strip("0") == "" else "out of range"
        raise ScheduleError(f"{what} {digits} is {why}: use {low} to {high}", text, pos, len(digits))
    return int(digits)


def _parse_kernel(m, text: str, base: int) -> Kernel:
    values = []
    for group in (2, 3, 4):
        digits = m.group(group)
        if digits is None:
            break
        pos = base + m.start(group)
        if len(digits) > 7 or not _power_of_two(int(digits)) or int(digits) > MAX_KERNEL_SIZE:
            raise ScheduleError(f"kernel size {digits} in {m.group(0)!r} is not a power of two from 1 to "
                                f"{MAX_KERNEL_SIZE}", text, pos, len(digits))
        values.append(int(digits))
    if len(values) == 1:
        return Kernel.k(values[0])
    if values[1] < 2 or values[2] < 2:
        raise ScheduleError(f"kernel {m.group(0)[m.group(0).index('k'):]!r}: h and w must be at least 2",
                            text, base + m.start(3) - 1, m.end() - m.start(3) + 1)
    return Kernel(*values)


def _tokenize(text: str, window: int | None) -> list:
    tokens, pos = [], 0
    for raw in text.split("_"):
        if not raw:
            raise ScheduleError("empty token (two '_' in a row, or a leading/trailing '_')", text,
                                min(pos, len(text) - 1), 1)
        if raw == "x":
            tokens.append(_Token(SKIP, (Segment(SKIP),), pos, raw))
        elif raw in TAILS:
            tokens.append(_Token(TAIL, (Segment(TAIL, tail=raw),), pos, raw))
        elif re.fullmatch(r"g\d*", raw):
            frames = _number(raw[1:], "window size", text, pos + 1, 1, MAX_LATENT_WINDOW_SIZE) if len(raw) > 1 else 0
            if frames and window is not None and frames != window:
                raise ScheduleError(f"{raw} generates {frames} latent frames but latent_window_size is {window}; "
                                    "make them equal or write a bare 'g'", text, pos, len(raw))
            tokens.append(_Token(GENERATE, (Segment(GENERATE, frames),), pos, raw))
        elif raw.startswith("f"):
            segments, at = [], 0
            while at < len(raw):
                m = _GROUP_RE.match(raw, at)
                if not m:
                    raise ScheduleError(f"cannot read {raw[at:]!r} in token {raw!r}: expected 'fNkM' groups",
                                        text, pos + at, len(raw) - at)
                frames = _number(m.group(1), "frame count", text, pos + at + 1, 1, MAX_GROUP_FRAMES)
                segments.append(Segment(GROUP, frames, _parse_kernel(m, text, pos)))
                at = m.end()
            tokens.append(_Token(GROUP, tuple(segments), pos, raw))
        else:
            raise ScheduleError(f"unknown token {raw!r}", text, pos, len(raw))
        pos += len(raw) + 1
    return tokens


def parse_schedule(text: str, latent_window_size: int | None = None, name: str = "custom") -> Schedule:
    """Parse the paper's schedule notation (Zhang & Agrawala, 2025, section 8.3) into a ``Schedule``."""
    if not isinstance(text, str):
        raise ScheduleError(f"a schedule must be a string, got {type(text).__name__}")
    if len(text) > MAX_SCHEDULE_CHARS:
        raise ScheduleError(f"the schedule is {len(text)} characters long, more than the {MAX_SCHEDULE_CHARS} "
                            f"accepted (released layouts need about 30); write fewer, larger groups")
    text = text.strip().lower()
    if not text:
        raise ScheduleError("the schedule is empty", text, 0, 1)
    tokens = _tokenize(text, latent_window_size)
    groups = sum(len(t.segments) for t in tokens if t.kind == GROUP)
    if groups > MAX_SCHEDULE_GROUPS:
        raise ScheduleError(f"the schedule has {groups} groups, more than the {MAX_SCHEDULE_GROUPS} accepted: each "
                            "group costs a projection and a RoPE table in every step (released layouts have 3-5); "
                            "merge neighbouring groups, e.g. 'f16k4' instead of sixteen 'f1k4'")
    segments = _annotate(tokens, text)
    window = next(s.frames for s in segments if s.kind == GENERATE) or latent_window_size
    return Schedule(segments, window or DEFAULT_LATENT_WINDOW_SIZE, name)


_TEMPLATES = {
    "standard": {"vanilla": "td_f16k4f2k2f1k1_g{W}",
                 "anti_drifting": "td_f16k4f2k2f1k1_g{W}_x_f1k1",
                 "inverted_anti_drifting": "g{W}_f1k1f2k2f16k4_td"},
    "inverted": {"vanilla": "f1k1_td_f16k4f2k2f1k1_g{W}",
                 "anti_drifting": "f1k1_td_f16k4f2k2f1k1_g{W}_x_f1k1",
                 "inverted_anti_drifting": "f1k1_x_g{W}_f1k1f2k2f16k4_td"},
    "uniform": {"vanilla": "f1{K}_td_f{N}{K}_g{W}",
                "anti_drifting": "f1{K}_td_f{N}{K}_g{W}_x_f1{K}",
                "inverted_anti_drifting": "f1{K}_x_g{W}_f{N}{K}_td"},
}


def _uniform_params(text: str, kernel, frames) -> tuple[str, int]:
    parts = text.split(":")
    if len(parts) > 3:
        raise ScheduleError("uniform takes at most a kernel and a frame count: 'uniform:k2:12'", text, 0, len(text))
    kernel = parts[1] if len(parts) > 1 else (kernel or UNIFORM_DEFAULT[0])
    frames = parts[2] if len(parts) > 2 else (frames or UNIFORM_DEFAULT[1])
    try:
        if not _GROUP_RE.fullmatch(f"f{frames}{kernel}"):
            raise ScheduleError("needs a kernel like 'k2' and a frame count like 12")
        parse_schedule(f"f{frames}{kernel}_g")
    except ScheduleError as err:
        raise ScheduleError(f"uniform kernel {kernel!r} / frame count {frames!r}: {err.problem}", text, 0,
                            len(text)) from None
    return kernel, int(frames)


@dataclasses.dataclass(frozen=True)
class ScheduleChoice:
    """A schedule as chosen once (the schedule node's output), parsed and checked when it is made.

    Named schedules are templates with one layout per sampling mode, so ``layouts`` holds one ``Schedule`` per
    entry of ``MODES``; a custom schedule is the same ``Schedule`` for every mode, checked against the mode when
    it is used (vanilla: nothing after the window). ``for_mode`` only looks up: nothing is parsed again.
    """

    name: str
    layouts: tuple

    def __post_init__(self):
        if len(self.layouts) != len(MODES) or not all(isinstance(s, Schedule) for s in self.layouts) or \
                len({s.latent_window_size for s in self.layouts}) != 1:
            raise ScheduleError(f"a ScheduleChoice holds one Schedule per mode ({', '.join(MODES)}), all with the "
                                "same window; make one with choose_schedule(name_or_text, latent_window_size)")

    @property
    def latent_window_size(self) -> int:
        return self.layouts[0].latent_window_size

    def for_mode(self, mode: str) -> Schedule:
        schedule = self.layouts[MODES.index(check_mode(mode))]
        check_schedule_mode(schedule, mode)
        return schedule


def choose_schedule(name_or_text=None, latent_window_size: int | None = None, *, kernel: str | None = None,
                    frames: int | None = None) -> ScheduleChoice:
    """A named schedule (default, standard, inverted, uniform[:kM[:N]]), a paper string or a Schedule, parsed once.

    ``default`` is each mode's released layout (= ``inverted``: the start frame kept at k1, then the geometric
    1 x k1, 2 x k2, 16 x k4 progression); ``standard`` is the geometric progression without the start frame;
    ``uniform`` packs every context frame with one kernel (``kernel``, ``frames`` or ``uniform:k2:12``).
    """
    if isinstance(name_or_text, (Schedule, ScheduleChoice)):
        if latent_window_size is not None and latent_window_size != name_or_text.latent_window_size:
            text = name_or_text.text if isinstance(name_or_text, Schedule) else name_or_text.name
            raise ScheduleError(f"the schedule generates {name_or_text.latent_window_size} latent frames but "
                                f"latent_window_size is {latent_window_size}", text)
        if isinstance(name_or_text, ScheduleChoice):
            return name_or_text
        return ScheduleChoice("custom", (name_or_text,) * len(MODES))
    text = "default" if name_or_text is None else str(name_or_text).strip().lower()
    key = text.split(":")[0]
    if key in NAMED and (key == "uniform" or ":" not in text):
        w = DEFAULT_LATENT_WINDOW_SIZE if latent_window_size is None else latent_window_size
        k, n = _uniform_params(text, kernel, frames) if key == "uniform" else ("", 0)
        templates = _TEMPLATES["inverted" if key == "default" else key]
        return ScheduleChoice(key, tuple(parse_schedule(templates[mode].format(W=w, K=k, N=n), w, name=key)
                                         for mode in MODES))
    return ScheduleChoice("custom", (parse_schedule(text, latent_window_size),) * len(MODES))


def get_schedule(name_or_text=None, mode: str = "inverted_anti_drifting", latent_window_size: int | None = None,
                 *, kernel: str | None = None, frames: int | None = None) -> Schedule:
    """The ``Schedule`` for ``mode`` of a name, a paper string, a Schedule or a ScheduleChoice (see ``choose_schedule``)."""
    check_mode(mode)
    return choose_schedule(name_or_text, latent_window_size, kernel=kernel, frames=frames).for_mode(mode)


def check_schedule_mode(schedule: Schedule, mode: str) -> None:
    """Vanilla sampling runs forward: nothing after the window exists yet, so the schedule must end at 'g'."""
    check_mode(mode)
    if mode == "vanilla" and schedule.right:
        _, pos, segs = next(span for span in schedule.token_spans() if span[2][0].side == "right")
        raise ScheduleError("vanilla mode generates forward, so no frame after the window exists yet; remove "
                            "the tokens after the 'g' window or use an anti-drifting mode",
                            schedule.text, pos, len(schedule.text) - pos)


def context_tokens(schedule: Schedule, height: int, width: int, tail_frames: int = 0) -> int:
    """Clean-context tokens of one section for a latent of (height, width); the same for every section.

    Counts every group, plus a 'tc' tail (always one pooled frame) and, for 'ta', ``tail_frames`` appended
    frames per side (the one option whose length grows with the video). The noisy window is not included.
    """
    for v, what in ((height, "height"), (width, "width")):
        if not isinstance(v, int) or v <= 0:
            raise ScheduleError(f"latent {what} must be a positive integer, got {v!r}")
    total = sum(s.kernel.tokens(s.frames, height, width) for s in schedule.groups)
    for side in ("left", "right"):
        kernel = schedule.tail_kernel(side)
        if kernel is not None:
            total += kernel.tokens(1 if schedule.side_tail(side) == "tc" else tail_frames, height, width)
    return total


def noisy_tokens(schedule: Schedule, height: int, width: int) -> int:
    """Tokens of the generated window (patch 1x2x2)."""
    return Kernel.k(1).tokens(1, height, width) * schedule.latent_window_size
