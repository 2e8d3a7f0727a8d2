"""COCO and label-map exports: round trip against what the renderer drew, crash safety of the streamed COCO file,
`--no-video`, semantic maps, and the command line's checks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from seg_video.cli.main import main
from seg_video.core.colors import instance_color, voc_palette
from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.io import exports
from seg_video.io.exports import CocoWriter, LabelMapWriter
from seg_video.io.sample import write_sample_clip
from seg_video.stages.render import Renderer

VOC = ClassTable((None, "aeroplane", "bicycle", "bird"))
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools decode


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Segmentation]:
    """Every segmentation the renderer draws, in order."""
    segs: list[Segmentation] = []
    render = Renderer.render

    def spy(self: Renderer, image: np.ndarray, seg: Segmentation, **kwargs: Any) -> np.ndarray:
        segs.append(seg)
        return render(self, image, seg, **kwargs)

    monkeypatch.setattr(Renderer, "render", spy)
    return segs


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of the sample scene, long enough to interrupt a run in the middle."""
    return write_sample_clip(tmp_path_factory.mktemp("media") / "long.mp4", seconds=20.0, width=320, height=240,
                             audio=False)


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]


def test_coco_and_label_maps_hold_exactly_what_the_renderer_drew(sample_clip: Path, tmp_path: Path,
                                                                 drawn: list[Segmentation]) -> None:
    coco_path, folder = tmp_path / "out.json", tmp_path / "masks"
    assert main([str(sample_clip), str(tmp_path / "out.mp4"), "--coco", str(coco_path), "--masks-dir", str(folder),
                 "--quiet"]) == 0

    coco = COCO(str(coco_path))
    data = json.loads(coco_path.read_text())
    times = frame_times(sample_clip)
    assert len(drawn) == len(times) == len(data["images"]) == data["videos"][0]["frames"] == 60
    assert data["info"]["status"] == "closed" and data["categories"] == [{"id": 0, "name": "moving"}]
    assert sum(len(seg) for seg in drawn) == len(data["annotations"]) > 60
    for index, seg in enumerate(drawn):
        image = data["images"][index]
        assert (image["frame_index"], image["file_name"]) == (index, f"{index:06d}.png")
        assert image["pts"] == pytest.approx(times[index], abs=1e-6)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert seg.masks is not None and seg.track_ids is not None
        assert [a["track_id"] for a in annotations] == [key or None for key in seg.track_ids.tolist()]  # 0: no id yet
        for annotation, mask, box in zip(annotations, seg.full_masks(), seg.boxes, strict=True):
            assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)  # pixel-exact
            assert annotation["area"] == mask.sum()
            assert annotation["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]], abs=0.01)
        with Image.open(folder / image["file_name"]) as picture:
            assert picture.mode == "P"
            labels = np.asarray(picture)
            palette = np.array(picture.getpalette()[:768], np.uint8).reshape(-1, 3)
        expected = np.zeros(labels.shape, np.uint8)
        for mask, key in zip(seg.full_masks(), seg.track_ids, strict=True):
            expected[mask] = key  # an object not confirmed yet is left out (0)
            assert not key or tuple(palette[key][::-1]) == instance_color(int(key))  # the video's colour for the track
        assert np.array_equal(labels, expected)
    legend = json.loads((folder / "legend.json").read_text())
    assert legend["kind"] == "instance" and legend["frames"] == 60
    assert {i["id"] for i in legend["instances"]} == {int(k) for seg in drawn for k in seg.track_ids if k}


def test_no_video_skips_render_and_encode(sample_clip: Path, tmp_path: Path, drawn: list[Segmentation],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    coco_path = tmp_path / "out.json"
    assert main([str(sample_clip), "--no-video", "--coco", str(coco_path), "--max-frames", "20"]) == 0
    assert drawn == []
    assert list(tmp_path.iterdir()) == [coco_path]
    assert len(json.loads(coco_path.read_text())["images"]) == 20
    assert "20 frames in" in capsys.readouterr().err


def interrupt(clip: Path, coco_path: Path, sig: signal.Signals) -> subprocess.CompletedProcess[str]:
    """Run the CLI on `clip` and send it `sig` once its COCO file lists 30 frames."""
    process = subprocess.Popen([sys.executable, "-m", "seg_video", str(clip), "--no-video", "--coco",
                                str(coco_path), "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if coco_path.exists() and coco_path.read_bytes().count(b'"frame_index"') >= 30:
            break
        time.sleep(0.005)
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, "", err)


def check_consistent(data: dict[str, Any], coco_path: Path) -> None:
    """Images numbered in order, every annotation on a listed image, and pycocotools reads the file."""
    indices = [image["frame_index"] for image in data["images"]]
    assert indices == list(range(len(indices)))
    assert {a["image_id"] for a in data["annotations"]} <= {image["id"] for image in data["images"]}
    assert len(COCO(str(coco_path)).getImgIds()) == len(indices)


def test_a_killed_run_leaves_a_valid_coco_file(long_clip: Path, tmp_path: Path) -> None:
    coco_path = tmp_path / "out.json"
    result = interrupt(long_clip, coco_path, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    data = json.loads(coco_path.read_text())  # parses: valid up to the last frame written
    assert data["info"]["status"] == "writing"
    assert 30 <= len(data["images"]) < 600
    check_consistent(data, coco_path)


def test_ctrl_c_closes_the_coco_file(long_clip: Path, tmp_path: Path) -> None:
    coco_path = tmp_path / "out.json"
    result = interrupt(long_clip, coco_path, signal.SIGINT)
    assert result.returncode == 130, result.stderr
    written = int(result.stderr.split("interrupted; ")[1].split(" frames")[0])
    data = json.loads(coco_path.read_text())
    assert data["info"]["status"] == "closed"
    assert len(data["images"]) == data["videos"][0]["frames"] == written
    assert b"    " not in coco_path.read_bytes()  # the reserve is gone
    check_consistent(data, coco_path)


def test_the_coco_file_parses_after_every_frame_while_its_reserve_grows(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "MIN_RESERVE", 150)  # about one image entry: the file is rewritten often
    path = tmp_path / "out.json"
    writer = CocoWriter(path, video_name="clip.mp4", fps=25.0, engine="test")
    masks = np.zeros((3, 24, 32), bool)
    for index in range(40):
        masks[:] = False
        masks[index % 3, 2:10, index % 20: index % 20 + 8] = True
        seg = Segmentation(24, 32, VOC, boxes=[[0, 0, 4, 4]] * 3, scores=[0.9, 0.8, 0.7], class_ids=[1, 2, 3],
                           masks=masks, track_ids=[5, 6, 7])
        writer.write(Frame(index=index, image=np.zeros((24, 32, 3), np.uint8), pts=2 * index,
                           time_base=Fraction(1, 50)), seg)
        data = json.loads(path.read_text())
        assert len(data["images"]) == index + 1 and len(data["annotations"]) == 3 * (index + 1)
        assert data["images"][-1]["pts"] == pytest.approx(index / 25)
    writer.close()
    data = json.loads(path.read_text())
    assert data["info"]["status"] == "closed" and data["videos"][0]["frames"] == 40
    assert [a["id"] for a in data["annotations"]] == list(range(1, 121))
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    check_consistent(data, path)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_rle_is_pycocotools_own_encoding() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        height, width = (int(v) for v in rng.integers(1, 30, size=2))
        mask = rng.random((height, width)) < rng.random()
        if trial % 4 == 0:  # a blob away from the edges, the whole frame, nothing
            mask = np.zeros((height, width), bool)
            mask[height // 3: height // 2 + 1, width // 3: width // 2 + 1] = True
        mask = np.ones_like(mask) if trial % 7 == 0 else np.zeros_like(mask) if trial % 11 == 0 else mask
        expected = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        found = exports.coco_annotations(Segmentation(height, width, VOC, boxes=[[0, 0, 1, 1]], scores=[1],
                                                      class_ids=[1], masks=mask[None]))[0]
        assert found["segmentation"]["counts"] == expected["counts"].decode()
        assert found["area"] == mask.sum()


def test_semantic_label_maps_use_class_ids_and_the_voc_colours(tmp_path: Path) -> None:
    labels = np.zeros((24, 32), np.uint8)
    labels[2:10, 3:9], labels[12:20, 10:30] = 1, 3
    seg = Segmentation(24, 32, VOC, label_map=labels)
    writer = LabelMapWriter(tmp_path / "maps")
    writer.write(Frame(index=7, image=np.zeros((24, 32, 3), np.uint8)), seg)
    writer.close()

    with Image.open(tmp_path / "maps" / "000007.png") as picture:
        assert picture.mode == "P"
        assert np.array_equal(np.asarray(picture), labels)
        palette = np.array(picture.getpalette()[:768], np.uint8).reshape(-1, 3)
    assert np.array_equal(palette[:4], voc_palette(4)[:, ::-1])  # the renderer's colours, as RGB
    legend = json.loads((tmp_path / "maps" / "legend.json").read_text())
    assert legend["kind"] == "semantic"
    assert [c["name"] for c in legend["classes"]] == ["aeroplane", "bicycle", "bird"]
    regions = exports.coco_annotations(seg)  # background (unnamed class 0) is not a region
    assert [(r["category_id"], r["area"]) for r in regions] == [(1, 48), (3, 160)]
    assert regions[1]["bbox"] == [10, 12, 20, 8]


def test_track_ids_above_255_are_written_as_16_bit_maps(tmp_path: Path) -> None:
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4], masks[1, 4:] = True, True
    seg = Segmentation(8, 8, VOC, boxes=[[0, 0, 8, 4], [0, 4, 8, 8]], scores=[1, 1], class_ids=[1, 2], masks=masks,
                       track_ids=[3, 300])
    writer = LabelMapWriter(tmp_path)
    writer.write(Frame(index=0, image=np.zeros((8, 8, 3), np.uint8)), seg)
    writer.close()
    with Image.open(tmp_path / "000000.png") as picture:
        assert np.asarray(picture).astype(int).tolist() == [[3] * 8] * 4 + [[300] * 8] * 4
    assert [i["color"] for i in json.loads((tmp_path / "legend.json").read_text())["instances"]][1] is None


@pytest.mark.parametrize(("extra", "message"), [
    (["--no-video"], "--no-video needs --coco"),
    (["OUT", "--no-video", "--coco", "c.json"], "--no-video writes no video"),
    (["OUT", "--coco", "OUT"], "same file"),
    (["OUT", "--coco", "exists.json"], "output exists"),
    (["OUT", "--masks-dir", "full"], "--masks-dir is not empty"),
    (["OUT", "--masks-dir", "exists.json"], "is a file"),
])
def test_refuses_bad_annotation_outputs_before_writing(sample_clip: Path, tmp_path: Path, extra: list[str],
                                                        message: str, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.json").write_text("{}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "000000.png").write_bytes(b"")
    before = sorted(tmp_path.rglob("*"))
    assert main([str(sample_clip), *[("out.mp4" if arg == "OUT" else arg) for arg in extra]]) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before
