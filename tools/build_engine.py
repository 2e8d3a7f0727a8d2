"""Build TensorRT engines (TensorRT ≥ 10 API) ahead of time, so `--backend trt` starts at once.

For a video size, into the cache `--backend trt` reads (the same export, keys and profiles as a run):

    python tools/build_engine.py fcn --frame-size 1280x720 --batch 4 --precision fp16
    python tools/build_engine.py maskrcnn --frame-size 1280x720 --weights model.pt

From one ONNX file (ours from tools/export_onnx.py, or any) to a plan file, with one optimisation profile given
as NAME:MIN:OPT:MAX shapes, like trtexec:

    python tools/build_engine.py --onnx exports/fcn/fcn.onnx --precision fp16 --out fcn.plan \\
        --shape images:1x3x520x928:4x3x520x928:4x3x520x928

Precision is the graph's: TensorRT 11 builds strongly typed networks only, so fp16 needs an fp16 export
(`--precision` is checked against the graph). Builds read and extend a timing cache (per GPU model and TensorRT
version in the cache folder, or `--timing-cache FILE`; one TensorRT refuses is warned about, left as it is and built
without), log their phases, and warn where the GPU lacks fast FP16. `--device cuda:N` builds on GPU N.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seg_video.core.errors import EngineError
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.plans import Profile, timing_cache_path


def parse_shape(text: str) -> tuple[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """`NAME:MIN:OPT:MAX` with dims like 1x3x520x928 → (name, (min, opt, max))."""
    name, *shapes = text.rsplit(":", 3)
    if len(shapes) != 3:
        raise argparse.ArgumentTypeError(f"expected NAME:MIN:OPT:MAX, e.g. images:1x3x520x928:4x3x520x928:4x3x520x928;"
                                         f" got {text!r}")
    try:
        low, opt, high = (tuple(int(d) for d in shape.split("x")) for shape in shapes)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dims must be integers joined by x; got {text!r}") from None
    return name, (low, opt, high)


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` → (height, width)."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x720; got {text!r}")
    return int(height), int(width)


def build_for_video(name: str, size: tuple[int, int], batch: int, params: dict[str, Any]) -> None:
    """Export (if not cached) and build every plan a run of this engine on frames of `size` needs."""
    engine = create_engine(name, {**params, "backend": "trt"})
    assert isinstance(engine, TorchEngine)
    engine.load()
    engine.warm_up(*size, batch=batch)
    engine.close()


def build_from_onnx(path: Path, profile: Profile, precision: str, out: Path, timing_cache: Path | None,
                    device: torch.device) -> None:
    """One plan from one ONNX graph with one profile."""
    import onnx
    import tensorrt as trt

    from seg_video.engines.cache import write_atomically
    from seg_video.engines.runners.graphs import graph_precision
    from seg_video.engines.runners.trt import build_plan, check_fast_fp16

    found = graph_precision(onnx.load(str(path), load_external_data=False))
    if found != precision:
        raise EngineError(f"{path} is an {found} graph, not {precision} (TensorRT builds the graph's own precision; "
                          f"export with tools/export_onnx.py --precision {precision})")
    if precision == "fp16":
        check_fast_fp16(device)
    with torch.cuda.device(device):
        cache = timing_cache or timing_cache_path(trt.__version__, torch.cuda.get_device_name(device))
        write_atomically(out, build_plan(path, profile, cache, path.stem))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and build; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", nargs="?", help="fcn, fcn101, lraspp, deeplabv3_mobilenet, maskrcnn or maskrcnn_v2: "
                                                  "build into the cache")
    parser.add_argument("--frame-size", type=parse_size, metavar="WxH", help="the video's frame size (engine mode)")
    parser.add_argument("--batch", type=int, default=1, help="frames per inference call (engine mode)")
    parser.add_argument("--weights", default="default", metavar="default|none|PATH", help="engine mode")
    parser.add_argument("--min-size", type=int, help="the model input's shorter side (engine mode)")
    parser.add_argument("--onnx", type=Path, help="build this ONNX file instead (file mode)")
    parser.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME:MIN:OPT:MAX",
                        help="an input's profile (file mode; one per dynamic input)")
    parser.add_argument("--out", type=Path, help="the plan file to write (file mode)")
    parser.add_argument("--timing-cache", type=Path, help="timing cache to read and extend (file mode)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    args = parser.parse_args(argv)
    if (args.engine is None) == (args.onnx is None):
        parser.error("give an ENGINE (with --frame-size) or --onnx FILE (with --shape and --out)")
    logging.basicConfig(level=logging.INFO, format="build_engine: %(message)s")
    try:
        if args.engine is not None:
            if args.frame_size is None:
                parser.error("engine mode needs --frame-size WxH")
            params: dict[str, Any] = {"precision": args.precision, "weights": args.weights, "device": args.device}
            if args.min_size is not None:
                params["min_size"] = args.min_size
            build_for_video(args.engine, args.frame_size, args.batch, params)
        else:
            if not args.shape or args.out is None:
                parser.error("file mode needs --shape NAME:MIN:OPT:MAX (per dynamic input) and --out FILE")
            if not torch.cuda.is_available():
                raise EngineError("building a TensorRT engine needs a CUDA GPU; none here")
            build_from_onnx(args.onnx, dict(args.shape), args.precision, args.out, args.timing_cache,
                            torch.device(args.device))
            print(f"wrote {args.out}")
    except (EngineError, ValueError) as error:
        print(f"build_engine: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
