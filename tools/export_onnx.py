"""Export a torchvision engine's network to ONNX, with its sidecar JSON, and check it against TensorRT's parser.

    python tools/export_onnx.py fcn --out exports/fcn                        # official weights, FP32
    python tools/export_onnx.py maskrcnn --weights none --precision fp16 --device cuda --out exports/mrcnn16

FCN exports whole (dynamic batch, height and width). Mask R-CNN exports as four graphs: backbone + FPN, RPN head,
box head, mask head; anchors, NMS, RoIAlign and mask pasting stay torchvision ops (docs/GPU.md). fp16 graphs hold
FP16 weights and math with FP32 inputs and outputs (what TensorRT's strongly typed build needs); exporting them on
the CPU works but is slow (the tracer runs the model in FP16 there). `OUT/model.json` records input names and shapes,
preprocessing, classes, weights hash, opset and versions. Exit status 1 when a graph uses something TensorRT's ONNX
parser does not support (the table in engines/data/trt_onnx_ops.txt).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import onnx

from seg_video.core.errors import EngineError
from seg_video.engines.base import create_engine, engine_class, engines
from seg_video.engines.cache import weights_sha256
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.graphs import Precision, Sidecar
from seg_video.engines.runners.onnx_ops import trt_operator_table, trt_problems

NEURAL = [name for name, info in engines().items()
          if info.origin == "built in" and issubclass(engine_class(name), TorchEngine)]


def export(name: str, out: Path, *, weights: str, precision: Precision, device: str) -> Sidecar:
    """Load the engine's model (eager torch) and export it into `out`."""
    engine = create_engine(name, {"weights": weights, "device": device})
    assert isinstance(engine, TorchEngine)
    engine.load()
    model = engine.loaded_model()
    out.mkdir(parents=True, exist_ok=True)
    return engine.export_onnx(model, out, weights=weights_sha256(model), precision=precision)


def report(sidecar: Sidecar, folder: Path) -> list[str]:
    """Print each graph's operators and TensorRT verdict; returns the problems found."""
    table = trt_operator_table()
    problems = []
    for part in sidecar.parts:
        found = trt_problems(onnx.load(str(folder / part.file)))
        verdict = "all supported" if not found else f"{len(found)} problem(s)"
        print(f"{part.file}: {', '.join(part.operators)} — TensorRT {table.release} ONNX parser: {verdict}")
        problems += [f"{part.file}: {problem}" for problem in found]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Export, write the sidecar, check the operators; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", choices=NEURAL)
    parser.add_argument("--out", type=Path, required=True, help="folder for the .onnx files and model.json")
    parser.add_argument("--weights", default="default", metavar="default|none|PATH")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--device", default="cpu", help="where to trace: cpu, cuda or cuda:N (fp16 is faster on CUDA)")
    args = parser.parse_args(argv)
    try:
        sidecar = export(args.engine, args.out, weights=args.weights, precision=cast(Precision, args.precision),
                         device=args.device)
    except EngineError as error:
        print(f"export_onnx: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.engine} ({sidecar.precision}, opset {sidecar.opset}, weights sha256 {sidecar.weights_sha256[:12]}…) "
          f"→ {args.out}")
    problems = report(sidecar, args.out)
    for problem in problems:
        print(f"export_onnx: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
