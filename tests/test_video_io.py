"""Video in and out on real files: VideoSource → VideoSink round trips keep frames, timing and audio."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import CLIP_FPS, CLIP_HEIGHT, CLIP_SECONDS, CLIP_WIDTH

from seg_video.core.config import EncoderSettings
from seg_video.core.errors import DecodeError, MediaError, WriteError
from seg_video.core.types import Frame
from seg_video.io.sample import COLOURS_BGR, SampleScene, frame_ticks, write_sample_clip
from seg_video.io.video import VideoSink, VideoSource, probe

FRAMES = round(CLIP_SECONDS * CLIP_FPS)
AAC_PACKET = 1024 / 48_000
"""Seconds of one AAC packet at the sample's rate: audio cut at a frame boundary may run on by this much."""


@dataclass
class Media:
    """A file as plain PyAV sees it: video frames and times, and the audio's codec and time span."""

    images: list[np.ndarray]
    times: list[float]
    audio_codec: str | None
    audio_end: float | None  # end of the last audio packet, seconds
    audio_packets: list[bytes]


def read_media(path: Path) -> Media:
    """Decode every video frame (no rotation applied) and list the audio packets, with PyAV alone."""
    with av.open(str(path)) as container:
        images, times = [], []
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.pts * frame.time_base))
        if not container.streams.audio:
            return Media(images, times, None, None, [])
        stream = container.streams.audio[0]
        container.seek(0)
        packets = [p for p in container.demux(stream) if p.pts is not None and p.size]
        end = max(float((p.pts + p.duration) * p.time_base) for p in packets)
        return Media(images, times, stream.codec.canonical_name, end, [bytes(p) for p in packets])


def transcode(source: Path, output: Path, *, limit: int | None = None,
              settings: EncoderSettings | None = None) -> int:
    """Copy `source` to `output` through VideoSource → VideoSink (first `limit` frames); returns frames written."""
    frames = VideoSource(source, max_frames=limit)
    with VideoSink(output, width=frames.info.width, height=frames.info.height, time_base=frames.info.time_base,
                   fps=frames.info.fps, settings=settings or EncoderSettings(), audio_from=source) as sink:
        for frame in frames:
            sink.write(frame)
    return sink.frames_written


def test_probe_describes_the_sample(sample_clip: Path) -> None:
    info = probe(sample_clip)
    assert (info.width, info.height, info.frame_count, info.rotation) == (CLIP_WIDTH, CLIP_HEIGHT, FRAMES, 0)
    assert info.fps == pytest.approx(CLIP_FPS)
    assert info.duration == pytest.approx(CLIP_SECONDS, abs=0.05)
    assert (info.codec, info.audio_codec, info.path) == ("h264", "aac", str(sample_clip))
    assert isinstance(info.time_base, Fraction)


def test_source_yields_bgr_frames_with_their_decoded_timestamps(sample_clip: Path) -> None:
    source = VideoSource(sample_clip, max_frames=45, source_id="cam")
    frames = list(source)
    plain = read_media(sample_clip)

    assert [f.index for f in frames] == list(range(45))
    assert [f.seconds for f in frames] == pytest.approx(plain.times[:45], abs=1e-9)
    assert all(f.time_base == source.info.time_base and f.source_id == "cam" for f in frames)
    scene = SampleScene(CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS)
    image, masks = scene.render(30)
    assert frames[30].image.dtype == np.uint8 and frames[30].image.shape == image.shape
    assert np.abs(frames[30].image.astype(int) - image).mean() < 6
    red = frames[30].image[masks[0]].mean(axis=0)  # object 0 is red: BGR order kept
    assert red == pytest.approx(COLOURS_BGR[0], abs=12)
    assert len(list(source)) == 45, "a source can be iterated again"


@pytest.mark.parametrize("clip_name", ["sample_clip", "vfr_clip"])
def test_round_trip_keeps_frame_count_timestamps_and_copies_aac(clip_name: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    clip: Path = request.getfixturevalue(clip_name)
    out = tmp_path / "out.mp4"
    assert transcode(clip, out) == len(read_media(clip).times)

    before, after = read_media(clip), read_media(out)
    assert after.times == pytest.approx(before.times, abs=1e-6)
    steps = np.round(np.diff(after.times) * CLIP_FPS, 6)
    assert set(steps) == ({1.0, 2.0} if clip_name == "vfr_clip" else {1.0})
    assert after.audio_codec == "aac"
    assert after.audio_packets == before.audio_packets, "AAC into MP4 is stream-copied, packet for packet"
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(after.images, before.images, strict=True)]) < 3


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "aac"), (".mkv", "pcm_s16le"), (".mov", "pcm_s16le")])
def test_pcm_audio_is_copied_where_the_container_takes_it_and_reencoded_otherwise(
        pcm_clip: Path, tmp_path: Path, suffix: str, codec: str) -> None:
    out = tmp_path / f"out{suffix}"
    transcode(pcm_clip, out)
    before, after = read_media(pcm_clip), read_media(out)
    assert after.times == pytest.approx(before.times, abs=1e-6)
    assert after.audio_codec == codec
    assert after.audio_end == pytest.approx(CLIP_SECONDS, abs=AAC_PACKET)
    if codec == "pcm_s16le":
        assert b"".join(after.audio_packets) == b"".join(before.audio_packets)


@pytest.mark.parametrize("clip_name", ["silent_clip", "sample_clip"])
def test_no_audio_in_when_the_input_has_none_or_audio_is_off(clip_name: str, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    out = tmp_path / "out.mp4"
    transcode(request.getfixturevalue(clip_name), out, settings=EncoderSettings(audio=False, crf=30))
    after = read_media(out)
    assert after.audio_codec is None and len(after.times) == FRAMES


@pytest.mark.parametrize("clip_name", ["sample_clip", "pcm_clip"])
def test_a_partial_output_plays_with_the_frames_written_and_matching_audio(
        clip_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    clip: Path = request.getfixturevalue(clip_name)
    out = tmp_path / "half.mp4"
    info = probe(clip)
    with pytest.raises(KeyboardInterrupt), VideoSink(out, width=info.width, height=info.height,
                                                     time_base=info.time_base, fps=info.fps, audio_from=clip,
                                                     settings=EncoderSettings()) as sink:
        for frame in VideoSource(clip):
            if frame.index == FRAMES // 2:
                raise KeyboardInterrupt  # Ctrl-C half-way: leaving the `with` block finalizes the file
            sink.write(frame)
    sink.close()  # idempotent
    with pytest.raises(WriteError, match="closed"):
        sink.write(Frame(index=0, image=np.zeros((info.height, info.width, 3), np.uint8)))

    after = read_media(out)
    assert len(after.times) == sink.frames_written == FRAMES // 2
    video_end = after.times[-1] + 1 / CLIP_FPS
    assert after.audio_end is not None
    assert video_end - AAC_PACKET <= after.audio_end <= video_end + AAC_PACKET


def upright_turn(image: np.ndarray, quarter_turns: int) -> np.ndarray:
    """`image` turned counterclockwise by `quarter_turns` quarter turns."""
    return np.ascontiguousarray(np.rot90(image, quarter_turns))


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int) -> None:
    """A clip stored sideways with display-matrix rotation comes out upright, as OpenCV's player shows it."""
    scene = SampleScene(CLIP_WIDTH, CLIP_HEIGHT, CLIP_FPS)
    path = tmp_path / f"rotated{rotation}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stored_shape = upright_turn(scene.background, -rotation // 90).shape
        stream.height, stream.width = stored_shape[:2]
        stream.options = {"crf": "12", "preset": "ultrafast"}
        stream.set_display_rotation(rotation)  # degrees counterclockwise, as FFmpeg's display matrix
        for index in range(8):
            picture = av.VideoFrame.from_ndarray(upright_turn(scene.render(index)[0], -rotation // 90),
                                                 format="bgr24")
            picture.pts = index
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))

    source = VideoSource(path)
    assert (source.info.width, source.info.height, source.info.rotation) == (CLIP_WIDTH, CLIP_HEIGHT, rotation)
    capture = cv2.VideoCapture(str(path))  # OpenCV applies the orientation by default
    try:
        for frame in source:
            shown = capture.read()[1]
            assert frame.image.shape == (CLIP_HEIGHT, CLIP_WIDTH, 3) == shown.shape
            assert frame.image.flags.c_contiguous
            assert np.abs(frame.image.astype(int) - shown).mean() < 2
            assert np.abs(frame.image.astype(int) - scene.render(frame.index)[0]).mean() < 3
    finally:
        capture.release()


def test_odd_sizes_are_padded_to_even_by_repeating_the_edge(tmp_path: Path) -> None:
    scene = SampleScene(161, 121, CLIP_FPS)
    odd = tmp_path / "odd.mkv"
    with VideoSink(odd, width=161, height=121, time_base=Fraction(1, 30), fps=30.0,
                   settings=EncoderSettings(pix_fmt="yuv444p", crf=0)) as sink:  # 4:4:4 holds odd sizes
        for index in range(10):
            sink.write(Frame(index=index, image=scene.render(index)[0], pts=index, time_base=Fraction(1, 30)))
        with pytest.raises(ValueError, match="takes"):
            sink.write(Frame(index=10, image=np.zeros((120, 160, 3), np.uint8)))
    assert (probe(odd).width, probe(odd).height) == (161, 121)

    out = tmp_path / "even.mp4"
    assert transcode(odd, out) == 10
    even = read_media(out).images
    assert even[0].shape == (122, 162, 3)
    original = scene.render(0)[0].astype(int)
    assert np.abs(even[0][:121, :161] - original).mean() < 6
    assert np.abs(even[0][:121, 161] - original[:, 160]).mean() < 4
    assert np.abs(even[0][121, :161] - original[120]).mean() < 4


def test_written_colours_come_back_as_they_went_in(tmp_path: Path) -> None:
    """Every colour a renderer draws survives the writer's own conversion to 4:2:0 and a standard decoder."""
    palette = np.array([[0, 0, 0], [255, 255, 255], [0, 0, 255], [0, 255, 0], [255, 0, 0], [40, 200, 255],
                        [128, 64, 32], [200, 30, 160]], np.uint8)
    image = np.repeat(np.repeat(palette[None], 64, axis=0), 32, axis=1)  # 64 x 256, a band per colour
    out = tmp_path / "colours.mp4"
    with VideoSink(out, width=256, height=64, time_base=Fraction(1, 30), fps=30.0,
                   settings=EncoderSettings(crf=0)) as sink:
        sink.write(Frame(index=0, image=image, pts=0, time_base=Fraction(1, 30)))
    decoded = read_media(out).images[0].astype(int)
    inside = (slice(8, 56), np.concatenate([np.arange(32 * k + 4, 32 * k + 28) for k in range(len(palette))]))
    assert np.abs(decoded[inside] - image[inside]).max() <= 3


def test_undecodable_packets_raise_decode_error_naming_the_frame(tmp_path: Path) -> None:
    clip = write_sample_clip(tmp_path / "good.mkv", seconds=1.0, width=160, height=120, audio=False)
    broken = tmp_path / "bad.mkv"
    noise = np.random.default_rng(7)
    with av.open(str(clip)) as source, av.open(str(broken), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for number, packet in enumerate(p for p in source.demux(video=0) if p.size):
            if number >= 15:  # garbage from the 16th packet on, timestamps kept
                garbage = av.Packet(noise.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
                packet = garbage
            packet.stream = stream
            target.mux(packet)

    frames: list[Frame] = []
    with pytest.raises(DecodeError, match=r"^decode error at frame \d+ of .*bad\.mkv: Invalid data") as raised:
        frames.extend(VideoSource(broken))
    assert f"frame {len(frames)} " in str(raised.value) and 0 < len(frames) <= 15
    assert "\n" not in str(raised.value)


def test_a_file_cut_short_yields_its_frames_then_a_decode_error(sample_clip: Path, tmp_path: Path) -> None:
    """FFmpeg's demuxer stops quietly at the cut; the stream's stated duration shows frames are missing."""
    whole = tmp_path / "whole.mkv"
    transcode(sample_clip, whole)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 4 // 10])
    frames: list[Frame] = []
    with pytest.raises(DecodeError, match=r"^decode error at frame (\d+) of .*cut\.mkv: the video stops at ") as raised:
        frames.extend(VideoSource(cut))
    assert f"frame {len(frames)} " in str(raised.value) and 0 < len(frames) < FRAMES
    times = [f.seconds for f in frames]
    assert times == sorted(times) and set(times) <= set(read_media(whole).times)
    assert times[:10] == pytest.approx(read_media(sample_clip).times[:10], abs=5e-4), "MKV holds them to the ms"


def write_audio_only(path: Path) -> None:
    """One second of silence as AAC in an .m4a, no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16_000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16_000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize(("make", "message"), [
    (None, "file not found: {path}"),
    (lambda p: p.write_bytes(b""), "not a media file: {path}"),
    (lambda p: p.write_text("hello, this is not a video\n" * 40), "not a media file: {path}"),
    (write_audio_only, "no video stream in {path} (it has: audio)"),
    (lambda p: p.mkdir(), "not a file but a folder: {path}"),
], ids=["missing", "empty", "text", "audio-only", "folder"])
def test_bad_inputs_raise_media_error_with_one_line(tmp_path: Path, make: Callable[[Path], object] | None,
                                                    message: str) -> None:
    path = tmp_path / "in.mp4"
    if make is not None:
        make(path)
    with pytest.raises(MediaError) as raised:
        VideoSource(path)
    assert str(raised.value) == message.format(path=path)


@pytest.mark.parametrize(("name", "message"), [
    ("missing/out.mp4", "cannot write {path}: No such file or directory"),
    ("out.unknownext", "cannot write video into a .unknownext file: {path} (seg-video writes .mp4, .m4v, .mov, .mkv, "
                       ".avi, .ts, .webm, .gif)")])
def test_unwritable_outputs_raise_write_error_naming_the_path(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / name
    with pytest.raises(WriteError) as raised:
        VideoSink(path, width=64, height=48, time_base=Fraction(1, 30), fps=30.0, settings=EncoderSettings())
    assert str(raised.value) == message.format(path=path)
    assert not path.exists()


@pytest.mark.parametrize(("settings", "complaint"), [
    (EncoderSettings(crf=52), "crf must be 0..51"),
    (EncoderSettings(crf=-1), "crf must be 0..51"),
    (EncoderSettings(preset="warp"), "preset must be one of"),
    (EncoderSettings(codec="no-such-codec"), "not an encoder"),
    (EncoderSettings(codec="aac"), "not a video one"),
    (EncoderSettings(codec="libx264", pix_fmt="pal8"), "pix_fmt 'pal8'"),
])
def test_encoder_settings_validate(settings: EncoderSettings, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        settings.validate()
    EncoderSettings().validate()


def test_sample_scene_is_deterministic_with_a_static_background() -> None:
    scene = SampleScene(160, 120, 30.0, objects=4)
    image, masks = scene.render(12)
    again, masks_again = SampleScene(160, 120, 30.0, objects=4).render(12)
    assert np.array_equal(image, again) and np.array_equal(masks, masks_again)
    assert masks.shape == (4, 120, 160) and masks.dtype == bool
    later, later_masks = scene.render(40)
    assert all(m.any() for m in later_masks), "every object is in view"
    assert not np.array_equal(masks, later_masks), "objects move"
    background = ~(masks.any(axis=0) | later_masks.any(axis=0))
    assert np.array_equal(image[background], later[background]), "the background never changes"
    assert (masks.sum(axis=0) <= 1).all(), "masks hold visible pixels only"
    assert np.array_equal((image != scene.background).any(axis=2), masks.any(axis=0)), "masks are exact"
    assert all((image[m] == colour).all() for m, colour in zip(masks, COLOURS_BGR, strict=False))


def test_vfr_ticks_alternate_and_pcm_needs_a_container_that_takes_it(tmp_path: Path) -> None:
    assert frame_ticks(0.2, 30.0, vfr=False) == [(i, 1) for i in range(6)]
    assert frame_ticks(0.2, 30.0, vfr=True) == [(0, 1), (1, 2), (3, 1), (4, 2)]
    with pytest.raises(ValueError, match="cannot carry pcm_s16le audio"):
        write_sample_clip(tmp_path / "pcm.mp4", seconds=0.2, width=64, height=48, audio_codec="pcm_s16le")
    assert not (tmp_path / "pcm.mp4").exists()


def avi_level(index: int) -> int:
    """Frame `index`'s grey level: far from its neighbours', so a frame shown out of place stands out."""
    return 10 + index * 47 % 230


def b_frame_avi(path: Path, frames: int = 50, fps: int = 25) -> Path:
    """An AVI as DivX-era cameras write it: MPEG-4 Part 2 with B-frames (AVI keeps decode order and no
    presentation times) and an AC3 track; frame k shows grey level `avi_level(k)`."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        video.codec_context.max_b_frames, video.codec_context.gop_size = 2, 12
        audio = out.add_stream("ac3", rate=48000, layout="stereo")
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(np.full((120, 160, 3), avi_level(index), np.uint8), format="bgr24")
            picture.pts = index
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
        for start in range(0, 48000 * frames // fps, 1536):
            sound = av.AudioFrame.from_ndarray(np.zeros((2, 1536), np.float32), format="fltp", layout="stereo")
            sound.sample_rate, sound.pts = 48000, start
            out.mux(audio.encode(sound))
        out.mux(audio.encode(None))
    return path


def test_an_avi_with_b_frames_keeps_its_frames_times_and_every_audio_packet(tmp_path: Path) -> None:
    """Frame k of an AVI is due at k / fps (FFmpeg's own guess puts B-frame streams one frame late); every audio
    packet, the first included, reaches the output at its time."""
    source = b_frame_avi(tmp_path / "in.avi")
    frames = list(VideoSource(source))
    assert [f.seconds for f in frames] == pytest.approx([k / 25 for k in range(50)])
    assert [float(f.image.mean()) for f in frames] == pytest.approx([avi_level(k) for k in range(50)], abs=12)
    out = tmp_path / "out.mp4"
    transcode(source, out)
    written, original = read_media(out), read_media(source)
    assert written.times == pytest.approx([k / 25 for k in range(50)], abs=1e-3)
    assert written.audio_codec == "ac3" and written.audio_packets == original.audio_packets  # all, copied as they are
    with av.open(str(out)) as copy:
        first = next(p for p in copy.demux(audio=0) if p.size)
        assert first.pts is not None and float(first.pts * first.time_base) == 0.0
