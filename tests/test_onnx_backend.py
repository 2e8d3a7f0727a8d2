"""The accelerated backends' CPU-checkable half: ONNX export (FCN whole, Mask R-CNN as four parts), ONNX Runtime CPU
against the eager torch engine, sidecars, TensorRT operator support, cache keys, backend choice, the tools.

Random-init weights saved once per module, 160x120 frames, model inputs of ~128 px; the exports go to a cache folder
of the module's own (SEG_VIDEO_CACHE), so nothing outside tmp_path is touched.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_torch_engines import (
    KEPT_DETECTIONS,
    MAX_SIZE,
    MIN_SIZE,
    assert_same_instances,
    build_reference,
    make_frame,
    run,
)
from tool_modules import load_tool

from seg_video.core.errors import ConfigError, EngineError
from seg_video.core.types import Frame
from seg_video.engines.base import create_engine
from seg_video.engines.models.torch_common import TorchEngine
from seg_video.engines.runners.base import bucket
from seg_video.engines.runners.choice import installed, resolve_backend
from seg_video.engines.runners.graphs import Sidecar, export_part, graph_precision, is_intact
from seg_video.engines.runners.onnx import ort_providers, with_profile
from seg_video.engines.runners.onnx_ops import operators, trt_operator_table, trt_problems
from seg_video.engines.runners.plans import (
    Profile,
    Profiles,
    SizeRange,
    cached_plan,
    contains,
    covers,
    keep_timing_cache,
    offer_timing_cache,
    plan_path,
    read_profile,
    save_plan,
    timing_cache_path,
    widened,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")



@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [make_frame(i) for i in range(3)]


@pytest.fixture(scope="module")
def engines(module_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TorchEngine]:
    """`engines(name, backend, **settings)`: the engine on saved random weights, loaded once per arguments."""
    built: dict[tuple[Any, ...], TorchEngine] = {}
    weights: dict[str, Path] = {}

    def get(name: str, backend: str, **settings: Any) -> TorchEngine:
        if name not in weights:
            weights[name] = tmp_path_factory.mktemp(name) / "state.pt"
            torch.save(build_reference(name).state_dict(), weights[name])
        key = (name, backend, *sorted(settings.items()))
        if key not in built:
            engine = create_engine(name, {"device": "cpu", "min_size": MIN_SIZE, "weights": str(weights[name]),
                                          "backend": backend, **settings})
            assert isinstance(engine, TorchEngine)
            engine.load()
            built[key] = engine
        return built[key]

    return get


def export_folder(module_cache: Path, name: str) -> Path:
    """The one (fp32) export of `name` in the cache."""
    (folder,) = (module_cache / "onnx").glob(f"{name}-fp32-*")  # temporary folders and locks are hidden
    return folder


def assert_fcn_matches_torch(engines: Callable[..., TorchEngine], frames: list[Frame], backend: str) -> None:
    """FCN on `backend` gives label maps ≥ 99.9 % equal to eager torch's, batched and at two sizes."""
    ours, reference = engines("fcn", backend), engines("fcn", "torch")
    mixed = [*frames[:2], make_frame(3, width=120, height=96)]  # a batch of 2, another size: dynamic batch, H, W
    for result, expected in zip(run(ours, mixed), run(reference, mixed), strict=True):
        assert result.label_map is not None and expected.label_map is not None
        assert len(np.unique(expected.label_map)) > 1, "a one-class label map would prove nothing"
        assert (result.label_map == expected.label_map).mean() >= 0.999


def assert_maskrcnn_matches_torch(engines: Callable[..., TorchEngine], frames: list[Frame], backend: str,
                                  atol: float) -> None:
    """Mask R-CNN's parts on `backend` give eager torch's instances (boxes and scores within `atol`), batch of 2."""
    everything = run(engines("maskrcnn", "torch", score_threshold=0.0, max_size=MAX_SIZE), frames[:2])
    scores = np.sort(everything[0].scores)[::-1]  # keep KEPT_DETECTIONS on frame 0, no score near the cut-off
    threshold = float(scores[KEPT_DETECTIONS - 1:KEPT_DETECTIONS + 1].mean())
    ours = run(engines("maskrcnn", backend, score_threshold=threshold, max_size=MAX_SIZE), frames[:2])
    assert len(ours[0]) == KEPT_DETECTIONS
    for result, expected in zip(ours, everything, strict=True):
        assert_same_instances(result, expected.select(expected.scores > threshold), atol=atol)


def test_fcn_on_onnx_runtime_matches_torch(engines: Callable[..., TorchEngine], frames: list[Frame]) -> None:
    assert_fcn_matches_torch(engines, frames, "onnx")


def test_maskrcnn_hybrid_on_onnx_runtime_matches_torch(engines: Callable[..., TorchEngine],
                                                       frames: list[Frame]) -> None:
    assert_maskrcnn_matches_torch(engines, frames, "onnx", atol=1e-3)


def test_exports_pass_the_tensorrt_operator_check(engines: Callable[..., TorchEngine], module_cache: Path) -> None:
    table = trt_operator_table()
    assert table.release == "10.15" and table.opsets == (9, 24) and len(table.known) > 180
    assert {"Conv", "Resize", "Gemm", "ConvTranspose"} <= table.supported and "Unique" not in table.supported
    seen = {}
    for name in ("fcn", "maskrcnn"):
        engines(name, "onnx")
        folder = export_folder(module_cache, name)
        sidecar = Sidecar.read(folder)
        for part in sidecar.parts:
            graph = onnx.load(str(folder / part.file))
            assert trt_problems(graph) == [], part.file
            assert list(part.operators) == operators(graph)
            seen[part.name] = set(part.operators)
    assert list(seen) == ["fcn", "backbone", "rpn_head", "box_head", "mask_head"]
    assert "Resize" in seen["fcn"] and "Resize" in seen["backbone"]
    assert not {"NonMaxSuppression", "RoiAlign", "TopK", "If", "Loop"} & set().union(*seen.values())


def test_operator_check_names_what_tensorrt_refuses() -> None:
    helper = onnx.helper
    nodes = [helper.make_node("Unique", ["x"], ["u"], name="unique"),
             helper.make_node("Resize", ["x", "", "scales"], ["r"], name="resize", mode="cubic", antialias=1),
             helper.make_node("Foo", ["x"], ["f"], name="custom", domain="example.ops")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in "urf"],
                              [helper.make_tensor("scales", onnx.TensorProto.FLOAT, [4], [1, 1, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    problems = "\n".join(trt_problems(model))
    assert "opset 25 is outside TensorRT 10.15's range 9..24" in problems
    assert "Unique is unsupported" in problems
    assert "Resize mode=cubic" in problems and "antialias" in problems
    assert "custom domain 'example.ops'" in problems


def test_sidecar_records_the_export_and_round_trips(engines: Callable[..., TorchEngine], module_cache: Path,
                                                    tmp_path: Path) -> None:
    engine = engines("fcn", "onnx")
    sidecar = Sidecar.read(export_folder(module_cache, "fcn"))
    assert sidecar.model == "fcn" and sidecar.precision == "fp32" and sidecar.opset == 17
    assert sidecar.versions["torch"] == torch.__version__ and sidecar.versions["onnx"] == onnx.__version__
    assert sidecar.classes == engine.classes.names and sidecar.classes[15] == "person"
    assert sidecar.preprocessing["mean"] == [0.485, 0.456, 0.406] and sidecar.preprocessing["colour"] == "RGB"
    (part,) = sidecar.parts
    assert part.inputs[0].name == "images" and part.inputs[0].shape == ("rows", 3, "images_height", "images_width")
    assert part.outputs[0].shape == ("rows", 21, "logits_height", "logits_width")
    assert len(sidecar.weights_sha256) == 64 and sidecar.model_sha256 != sidecar.weights_sha256
    assert Sidecar.read(sidecar.write(tmp_path)) == sidecar
    (tmp_path / "model.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="not a seg-video ONNX sidecar"):
        Sidecar.read(tmp_path)


def test_export_cache_is_reused_and_a_damaged_one_remade(engines: Callable[..., TorchEngine], module_cache: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    engine = engines("fcn", "onnx")
    folder = export_folder(module_cache, "fcn")
    graph = folder / "fcn.onnx"
    before = graph.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="seg_video")
    again = create_engine("fcn", {**dataclasses.asdict(engine.params)})
    again.load()
    assert graph.stat().st_mtime_ns == before and "exporting" not in caplog.text
    with graph.open("r+b") as stream:
        stream.seek(200)
        stream.write(b"\0" * 16)
    again.load()
    assert "exporting to ONNX" in caplog.text and export_folder(module_cache, "fcn") == folder
    assert is_intact(folder) is not None and graph.stat().st_mtime_ns != before


def test_fp16_export_has_fp16_weights_and_fp32_io(engines: Callable[..., TorchEngine],
                                                  tmp_path: Path) -> None:
    import onnxruntime as ort

    engine = engines("maskrcnn", "torch")
    mask_head = engine.parts(engine.loaded_model())[-1]
    infos, graphs = {}, {}
    for precision in ("fp32", "fp16"):
        (tmp_path / precision).mkdir()
        infos[precision] = export_part(mask_head, tmp_path / precision, precision, torch.device("cpu"))
        graphs[precision] = onnx.load(str(tmp_path / precision / "mask_head.onnx"))
    assert graph_precision(graphs["fp16"]) == "fp16" and graph_precision(graphs["fp32"]) == "fp32"
    assert "Cast" in infos["fp16"].operators and trt_problems(graphs["fp16"]) == []
    assert graphs["fp16"].graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graphs["fp16"].graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    features = np.random.default_rng(0).standard_normal((3, 256, 14, 14)).astype(np.float32)
    full, half = (ort.InferenceSession(str(tmp_path / p / "mask_head.onnx"), providers=["CPUExecutionProvider"])
                  .run(None, {"mask_features": features})[0] for p in ("fp32", "fp16"))
    np.testing.assert_allclose(half, full, atol=0.05 * float(np.abs(full).max()))


def test_parts_with_no_rows_answer_empty_without_running(engines: Callable[..., TorchEngine]) -> None:
    engine = engines("maskrcnn", "onnx", max_size=MAX_SIZE)  # the export of the hybrid test, reused
    outputs = engine._runners["mask_head"](torch.zeros(0, 256, 14, 14))
    assert [tuple(x.shape) for x in outputs] == [(0, 91, 28, 28)]
    blank = run(engine, [Frame(index=0, image=np.zeros((120, 160, 3), np.uint8))])[0]
    assert blank.masks is not None and blank.full_masks().shape[1:] == (120, 160)


def test_plan_cache_key_changes_with_each_part_of_it(engines: Callable[..., TorchEngine], module_cache: Path) -> None:
    engines("fcn", "onnx")
    sidecar = Sidecar.read(export_folder(module_cache, "fcn"))
    part = sidecar.parts[0]
    profile = images_profile(2, 170)
    h100, trt11 = "NVIDIA H100 80GB HBM3", "11.4.0.106"
    base = plan_path(sidecar, part, profile, trt11, h100)
    variants = [
        (dataclasses.replace(sidecar, model="fcn101"), part, profile, trt11, h100),
        (dataclasses.replace(sidecar, weights_sha256="0" * 64), part, profile, trt11, h100),
        (dataclasses.replace(sidecar, model_sha256="1" * 64), part, profile, trt11, h100),
        (dataclasses.replace(sidecar, precision="fp16"), part, profile, trt11, h100),
        (sidecar, dataclasses.replace(part, sha256="2" * 64), profile, trt11, h100),
        (sidecar, part, images_profile(2, 160), trt11, h100),
        (sidecar, part, images_profile(4, 170), trt11, h100),
        (sidecar, part, profile, "10.13.3.9", h100),
        (sidecar, part, profile, trt11, "NVIDIA L4"),
    ]
    names = {plan_path(*variant).name for variant in variants}
    assert base.name not in names and len(names) == len(variants) and base.parent == module_cache / "trt"
    assert plan_path(sidecar, part, dict(reversed(list(profile.items()))), trt11, h100) == base
    assert timing_cache_path(trt11, h100).name == "timing-NVIDIA-H100-80GB-HBM3-11.4.0.106.cache"


def images_profile(batch: int, width: int, height: int = 128) -> Profile:
    """FCN's profile after warm-up on `batch` frames whose model input is height × width (shorter side 128)."""
    return {"images": ((1, 3, 128, 128), (batch, 3, height, width), (batch, 3, 2 * width, 2 * width))}


def test_a_cached_plan_is_found_when_its_profile_contains_the_wanted_one(engines: Callable[..., TorchEngine],
                                                                        module_cache: Path) -> None:
    engines("fcn", "onnx")
    sidecar = Sidecar.read(export_folder(module_cache, "fcn"))
    part = sidecar.parts[0]
    h100, trt11 = "NVIDIA H100 80GB HBM3", "11.4.0.106"
    assert cached_plan(sidecar, part, trt11, h100, images_profile(1, 960)) is None
    profile = images_profile(4, 960)  # as tools/build_engine.py --batch 4 leaves it
    path = plan_path(sidecar, part, profile, trt11, h100)
    save_plan(path, b"plan", profile)
    assert read_profile(path.with_suffix(".json")) == profile and path.read_bytes() == b"plan"
    assert cached_plan(sidecar, part, trt11, h100, images_profile(3, 960)) == (path, profile)  # a smaller batch fits
    assert cached_plan(sidecar, part, trt11, h100, images_profile(3, 900)) == (path, profile)  # and a narrower frame
    assert cached_plan(sidecar, part, trt11, h100, images_profile(8, 960)) is None
    assert cached_plan(sidecar, part, trt11, h100, images_profile(1, 964)) is None
    assert cached_plan(sidecar, part, trt11, "NVIDIA L4", images_profile(1, 960)) is None
    path.with_suffix(".json").write_text("{")  # being written by another run
    assert cached_plan(sidecar, part, trt11, h100, images_profile(3, 960)) is None


def test_size_ranges_follow_the_resize_rules(engines: Callable[..., TorchEngine]) -> None:
    fcn, maskrcnn = engines("fcn", "torch"), engines("maskrcnn", "torch", max_size=MAX_SIZE)
    assert SizeRange.of(fcn.preprocessing()["resize"]) == SizeRange(MIN_SIZE, None)
    assert SizeRange.of(maskrcnn.preprocessing()["resize"]) == SizeRange(32, 224)  # MAX_SIZE 224: 7 × 32
    assert SizeRange.of({"shorter_side": 800, "longer_side_max": 1333, "pad_to_multiple_of": 32}) == SizeRange(32, 1344)


def maskrcnn_profiles(engines: Callable[..., TorchEngine], module_cache: Path) -> tuple[Profiles, Sidecar]:
    """Mask R-CNN's export and fresh profiles for its 800/1333 rule (sizes here are what the rule gives at 720p)."""
    engines("maskrcnn", "onnx", max_size=MAX_SIZE)
    sidecar = Sidecar.read(export_folder(module_cache, "maskrcnn"))
    return Profiles(SizeRange(32, 1344), sidecar.parts[0].name), sidecar


def test_profiles_span_the_configured_maxima_from_the_first_call(engines: Callable[..., TorchEngine],
                                                                 module_cache: Path) -> None:
    profiles, sidecar = maskrcnn_profiles(engines, module_cache)
    backbone, rpn, boxes, masks = (sidecar.part(name) for name in ("backbone", "rpn_head", "box_head", "mask_head"))
    assert boxes.rows == (1000, 1000) and masks.rows == (16, 100)
    images = [(4, 3, 768, 1344)]  # a batch of 4 at 1280x720: 750x1333 padded to 32
    profiles.observe(backbone, images)
    assert profiles.wanted(backbone, images) == {"images": ((1, 3, 32, 32), (4, 3, 768, 1344), (4, 3, 1344, 1344))}
    levels = [(4, 256, 768 // stride, -(-1344 // stride)) for stride in (4, 8, 16, 32, 64)]
    rpn_profile = profiles.wanted(rpn, levels)
    assert rpn_profile["features_0"] == ((1, 256, 8, 8), (4, 256, 192, 336), (4, 256, 336, 336))
    assert rpn_profile["features_pool"] == ((1, 256, 1, 1), (4, 256, 12, 21), (4, 256, 21, 21))
    for stride, (name, (low, _, high)) in zip((4, 8, 16, 32, 64), rpn_profile.items(), strict=True):
        smallest, largest = -(-32 // stride), -(-1344 // stride)  # the feature maps of a 32 and a 1344 side
        assert max(low[2:]) <= smallest and min(high[2:]) >= largest, name
    three_detections = [(3, 256, 14, 14)]  # the first frames' few detections must not set the maximum
    assert profiles.wanted(masks, three_detections) == {
        "mask_features": ((1, 256, 14, 14), (64, 256, 14, 14), (400, 256, 14, 14))}
    assert profiles.wanted(boxes, [(4000, 256, 7, 7)])["box_features"][2] == (4000, 256, 7, 7)
    profiles.observe(backbone, [(2, 3, 768, 1344)])  # a short last batch keeps the run's batch
    assert profiles.wanted(masks, three_detections)["mask_features"][2][0] == 400


def test_fcn_profiles_reach_twice_the_longer_side_and_widen_when_outgrown(engines: Callable[..., TorchEngine],
                                                                         module_cache: Path) -> None:
    engines("fcn", "onnx")
    (fcn,) = Sidecar.read(export_folder(module_cache, "fcn")).parts
    profiles = Profiles(SizeRange(520, None), fcn.name)
    with pytest.raises(RuntimeError, match="before fcn"):
        profiles.wanted(fcn, [(1, 3, 520, 924)])
    landscape = [(2, 3, 520, 924)]
    profiles.observe(fcn, landscape)
    first = profiles.wanted(fcn, landscape)
    assert first == {"images": ((1, 3, 520, 520), (2, 3, 520, 924), (2, 3, 1848, 1848))}
    assert covers(first, ["images"], [(1, 3, 924, 520)])  # a portrait source fits as it is
    assert not covers(first, ["images"], [(4, 3, 520, 924)])
    bigger = [(4, 3, 520, 2000)]
    profiles.observe(fcn, bigger)
    second = widened(first, profiles.wanted(fcn, bigger))
    assert second == {"images": ((1, 3, 520, 520), (4, 3, 520, 2000), (4, 3, 4000, 4000))}
    assert contains(second, first) and not contains(first, second)


def test_timing_cache_refused_or_unreadable_is_one_warning_and_the_file_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "timing.cache"
    offered: list[bytes] = []

    def accept(known: bytes) -> bool:
        offered.append(known)
        return True

    assert offer_timing_cache(path, accept) and offered == [b""]
    path.write_bytes(b"from another TensorRT")
    caplog.set_level(logging.WARNING, logger="seg_video")
    assert not offer_timing_cache(path, lambda known: False)
    assert caplog.text.count("\n") == 1 and "refused" in caplog.text and "building without it" in caplog.text
    keep_timing_cache(path, None)  # TensorRT gave none back
    assert "gave no timing cache back" in caplog.text and path.read_bytes() == b"from another TensorRT"

    class Built:
        def serialize(self) -> bytes:
            return b"new timings"

    keep_timing_cache(path, Built())
    assert path.read_bytes() == b"new timings"
    path.unlink()
    path.mkdir()  # not a readable file
    assert not offer_timing_cache(path, lambda known: True) and "unreadable" in caplog.text


def test_buckets() -> None:
    assert [bucket(n) for n in (0, 1, 2, 3, 4, 5, 1000, 1024, 1025)] == [1, 1, 2, 4, 4, 8, 1024, 1024, 2048]


def test_backend_choice(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == ("onnx", "backend auto → onnx (fastest present on cpu)")
    with pytest.raises(EngineError, match=r"backend trt needs a CUDA GPU; .*torch, torch-compiled, onnx, opencv can "
                                          "run here"):
        create_engine("fcn", {"device": "cpu", "backend": "trt"})
    with pytest.raises(EngineError, match="providers cuda need device cuda"):
        create_engine("fcn", {"device": "cpu", "backend": "onnx", "providers": ["cuda"]})
    with pytest.raises(ConfigError, match="providers must be of tensorrt, cuda, cpu; got 'gpu'"):
        create_engine("fcn", {"device": "cpu", "providers": ["gpu"]})
    with pytest.raises(ConfigError, match="backend must be one of auto, torch, torch-compiled, onnx, trt"):
        create_engine("fcn", {"backend": "tensorrt"})
    monkeypatch.setattr("seg_video.engines.runners.choice.installed", lambda *modules: "onnxruntime" not in modules)
    assert resolve_backend("auto", cpu) == (
        "torch", "backend auto → torch (fastest present on cpu; onnx needs onnx and onnxruntime "
                 "(pip install 'seg-video[onnx]'))")
    with pytest.raises(EngineError, match=r"backend onnx needs onnx and onnxruntime"):
        create_engine("fcn", {"device": "cpu", "backend": "onnx"})
    assert installed("onnx") and not installed("no_such_module_here")
    caplog.set_level(logging.WARNING, logger="seg_video")
    chosen = ort_providers(["cuda", "cpu"], cpu, None, Path("unused"))
    assert chosen == [("CPUExecutionProvider", {})]
    assert "no cuda execution provider" in caplog.text and "falling back to cpu" in caplog.text


def test_onnx_runtime_prefers_cuda_and_gives_tensorrt_explicit_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: everything)
    gpu = torch.device("cuda", 1)  # only named: nothing runs on it
    default = ort_providers([], gpu, None, Path("cache"))
    assert [name for name, _ in default] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default[0][1] == {"device_id": "1"}
    asked = ort_providers(["tensorrt", "cuda"], gpu, None, Path("cache"))
    profile = {"features_0": ((1, 256, 8, 8), (4, 256, 192, 336), (4, 256, 336, 336)),
               "features_1": ((1, 256, 4, 4), (4, 256, 96, 168), (4, 256, 168, 168))}
    tensorrt, cuda = with_profile(asked, profile)
    assert tensorrt[0] == "TensorrtExecutionProvider" and tensorrt[1]["device_id"] == "1"
    assert tensorrt[1]["trt_profile_min_shapes"] == "features_0:1x256x8x8,features_1:1x256x4x4"
    assert tensorrt[1]["trt_profile_opt_shapes"] == "features_0:4x256x192x336,features_1:4x256x96x168"
    assert tensorrt[1]["trt_profile_max_shapes"] == "features_0:4x256x336x336,features_1:4x256x168x168"
    assert tensorrt[1]["trt_engine_cache_path"] == str(Path("cache") / "ort-trt") and cuda == asked[1]


def test_cli_backend_flag_reaches_the_engine() -> None:
    from seg_video.cli.options import ENGINE_FLAGS, build_parser, engine_overrides

    assert ENGINE_FLAGS["backend"] == "backend"
    args = build_parser().parse_args(["in.mp4", "out.mp4", "--engine", "fcn", "--backend", "auto"])
    assert engine_overrides(args)["backend"] == "auto"


def test_export_tool_writes_graphs_sidecar_and_verdict(engines: Callable[..., TorchEngine], module_cache: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = engines("fcn", "onnx").params.weights
    assert load_tool("export_onnx").main(["fcn", "--weights", weights, "--out", str(tmp_path / "fcn")]) == 0
    out = capsys.readouterr().out
    assert "fcn.onnx: Add, Cast, Concat" in out and "TensorRT 10.15 ONNX parser: all supported" in out
    sidecar = Sidecar.read(tmp_path / "fcn")
    assert sidecar.weights_sha256 == Sidecar.read(export_folder(module_cache, "fcn")).weights_sha256
    assert load_tool("build_engine").main(["--onnx", str(tmp_path / "fcn" / "fcn.onnx"), "--precision", "fp32",
                                      "--out", str(tmp_path / "fcn.plan"),
                                      "--shape", "images:1x3x128x170:1x3x128x170:2x3x128x170"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err

