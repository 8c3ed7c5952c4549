"""Lossy round trips of frames (``capsule_triage.recompress``): what ``triage eval --codec`` scores and
``triage train --recompress`` trains on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from capsule_triage.recompress import H264_CRF_RANGE, JPEG_QUALITY_RANGE, Codec, jpeg, recompress_augment, round_trip
from conftest import WCE, load_rgb, manifest_rows, needs_shared


@pytest.fixture(scope="module")
def real_frames() -> torch.Tensor:
    """12 real capsule frames (6 per class), uint8 [12, 3, 224, 224]."""
    if not WCE.exists():
        pytest.skip(f"real data not found at {WCE}")
    rows = manifest_rows("test", "bleeding")[::30][:6] + manifest_rows("test", "non-bleeding")[::30][:6]
    return torch.from_numpy(np.stack([load_rgb(WCE / r["path"]) for r in rows])).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("spec, kind, level", [("h264:23", "h264", 23), ("jpeg:75", "jpeg", 75), ("h264:0", "h264", 0)])
def test_codec_specs_parse(spec, kind, level):
    codec = Codec.parse(spec)
    assert (codec.kind, codec.level, str(codec)) == (kind, level, spec)


@pytest.mark.parametrize("spec, message", [("h265:23", "expected h264:CRF or jpeg:QUALITY"), ("jpeg", "expected h264:CRF"),
                                           ("h264:x", "expected h264:CRF"), ("h264:52", "CRF must be in 0-51"),
                                           ("jpeg:0", "quality must be in 1-100"), ("jpeg:101", "quality must be in 1-100")])
def test_bad_codec_specs_name_the_spec_and_the_problem(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        Codec.parse(spec)
    assert repr(spec) in str(info.value)


@needs_shared
@pytest.mark.parametrize("spec", ["h264:23", "jpeg:75"])
def test_round_trip_keeps_order_and_shape_and_loses_a_little(real_frames, spec):
    out = round_trip(real_frames, Codec.parse(spec))
    assert out.shape == real_frames.shape and out.dtype == torch.uint8
    assert all(torch.equal(out, round_trip(real_frames, Codec.parse(spec))) for _ in range(3))  # reproducible (model cards quote it)
    diff = (out.int() - real_frames.int()).abs().float()
    per_frame = diff.flatten(1).mean(1)
    assert 0.3 < float(per_frame.mean()) < 6  # lossy, but the same pictures
    # every output frame is nearest to its own input (the clip's frames come back in order)
    distance = torch.cdist(out.flatten(1).float(), real_frames.flatten(1).float())
    assert distance.argmin(dim=1).tolist() == list(range(len(real_frames)))


@needs_shared
@pytest.mark.parametrize("spec", ["h264:10", "jpeg:95"])
def test_round_trip_keeps_the_frames_brightness(real_frames, spec):
    """Decoded as the reader decodes (video_colour.RGB_CONVERSION): no systematic shift per channel. swscale's
    default conversion took 1-2 grey levels off each, so training and thresholds saw darker frames."""
    shift = (round_trip(real_frames, Codec.parse(spec)).float() - real_frames.float()).mean(dim=(0, 2, 3))
    assert shift.abs().max() < 0.4, shift


@needs_shared
def test_lower_quality_loses_more(real_frames):
    def loss(spec: str) -> float:
        return float((round_trip(real_frames, Codec.parse(spec)).int() - real_frames.int()).abs().float().mean())

    assert loss("h264:10") < loss("h264:23") < loss("h264:40")
    assert loss("jpeg:95") < loss("jpeg:75") < loss("jpeg:30")


def test_h264_needs_even_sides():
    with pytest.raises(ValueError, match="even frame sides, got 15x16"):
        round_trip(torch.zeros((2, 3, 16, 15), dtype=torch.uint8), Codec.parse("h264:23"))


@needs_shared
@pytest.mark.parametrize("codec", ["h264", "jpeg"])
def test_recompress_augment_is_seeded_and_follows_its_probability(real_frames, codec):
    frames = real_frames.repeat(4, 1, 1, 1)  # 48 frames

    def changed(out: torch.Tensor) -> torch.Tensor:
        return (out != frames).flatten(1).any(1)

    a = recompress_augment(frames, 0.5, torch.Generator().manual_seed(3), codec)
    b = recompress_augment(frames, 0.5, torch.Generator().manual_seed(3), codec)
    assert torch.equal(a, b)  # same generator state, same batch (what --resume relies on)
    assert 10 <= int(changed(a).sum()) <= 38
    assert not changed(recompress_augment(frames, 0.0, torch.Generator().manual_seed(3), codec)).any()
    every = recompress_augment(frames, 1.0, torch.Generator().manual_seed(3), codec)
    assert changed(every).all()
    # a changed frame is a round trip of its input at a level in the documented range
    low, high = H264_CRF_RANGE if codec == "h264" else JPEG_QUALITY_RANGE
    if codec == "h264":  # the whole batch is one clip at one CRF
        assert any(torch.equal(every, round_trip(frames, Codec("h264", crf))) for crf in range(low, high + 1))
    else:
        first = frames[0].permute(1, 2, 0).numpy()
        assert any(np.array_equal(every[0].permute(1, 2, 0).numpy(), jpeg(first, q)) for q in range(low, high + 1))


def test_recompress_augment_names_an_unknown_codec():
    with pytest.raises(ValueError, match="recompress codec must be one of .*got 'png'"):
        recompress_augment(torch.zeros((2, 3, 16, 16), dtype=torch.uint8), 0.5, torch.Generator(), "png")


@pytest.mark.parametrize("spec", ["h264:35", "jpeg:30"])
def test_stills_are_compressed_at_their_own_size_as_a_video_s_frames_are(tmp_path, spec):
    """QA 65 #2: `triage eval --codec` compressed the stills after they were resized to the model's input, so a 96 px model
    saw the blocks of a 96 px video (mean score 0.070 from `triage run` on the same frames as a 224 px video, 0.013 without
    --codec). The round trip is now at the stills' own size, before the model's resize, as a video's frames are."""
    import cv2

    from capsule_triage.datasets import Sample
    from capsule_triage.recompress import round_trip_stills
    from capsule_triage.reader import fit_still
    from capsule_triage.stills import load_images
    from conftest import demo_clip_frames

    frames = [np.ascontiguousarray(f[:224, :224]) for f in demo_clip_frames()[:12]]
    samples = []
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        samples.append(Sample(tmp_path / f"f{i}.png", "bleeding" if i % 2 else "normal", f"g{i}", "test"))
    codec = Codec.parse(spec)
    loaded = load_images(samples, size=64, class_names=["normal", "bleeding"], codec=codec).images
    own = round_trip(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous(), codec)  # the whole clip at 224 px
    expected = np.stack([fit_still(f, 64, True) for f in own.permute(0, 2, 3, 1).numpy()])
    assert torch.equal(loaded, torch.from_numpy(expected).permute(0, 3, 1, 2))
    clean = load_images(samples, size=64, class_names=["normal", "bleeding"]).images
    small = round_trip(clean, codec)  # the old order: resized to 64 px, then compressed
    off = lambda a: (a.float() - clean.float()).abs().mean().item()  # noqa: E731
    assert off(small) > 1.5 * off(loaded), (off(small), off(loaded))  # compression at 64 px costs far more
    wide = np.ascontiguousarray(np.concatenate([frames[4], frames[5]], axis=1)[:, :400])  # 400 x 224
    mixed = [np.ascontiguousarray(f[:223, :221]) for f in frames[:2]] + [wide, cv2.resize(frames[3], (100, 90)), frames[6]]
    out = list(round_trip_stills(iter(mixed), codec))  # H.264: a clip per run of one size, odd sides cut to even
    assert [o.shape for o in out] == [(222, 220, 3) if codec.kind == "h264" else (223, 221, 3)] * 2 + [(224, 400, 3), (90, 100, 3), (224, 224, 3)]
    for got, still in zip(out, mixed):  # review rev60 #1: a wide still after a square one was squashed to the first's size
        assert np.abs(got.astype(int) - still[: got.shape[0], : got.shape[1]]).mean() < 8, spec
    thin = list(round_trip_stills(iter([frames[0][:64, :64], frames[1][:1, :64], frames[2][:64, :1]]), codec))  # rev61: IndexError
    assert [t.shape for t in thin] == ([(64, 64, 3), (2, 64, 3), (64, 2, 3)] if codec.kind == "h264" else [(64, 64, 3), (1, 64, 3), (64, 1, 3)])


def test_h264_recompress_at_an_odd_input_size_is_refused_before_the_frames_are_loaded(tmp_path):
    """helper-127 #5: `triage train --input-size 33 --recompress 1.0` loaded every image, then failed in the first batch
    with "H.264 at 4:2:0 needs even frame sides, got 33x33", naming neither option."""
    from capsule_triage.datasets import Sample
    from capsule_triage.errors import InputError
    from capsule_triage.train_options import TrainOptions, make_config

    samples = [Sample(tmp_path / f"{i}.png", label, str(i), "train") for i, label in enumerate(["a", "b"])]
    options = TrainOptions(data=tmp_path, output=tmp_path / "w", arch="resnet10t", init="none", input_size=33, recompress=1.0)
    with pytest.raises(InputError, match=r"^options: --recompress with --recompress-codec h264 encodes frames at the model's input "
                                         r"size 33, and H.264 at 4:2:0 needs even sides: give --input-size 32 or 34, or --recompress-codec jpeg$"):
        make_config(options, samples)
    for fine in ({"recompress_codec": "jpeg"}, {"recompress": 0.0}, {"input_size": 34}):
        assert make_config(replace(options, **fine), samples).input_size == fine.get("input_size", 33)


def test_a_clip_whose_encoder_fails_to_flush_is_closed_all_the_same():
    """rev61: a failed flush at the end of a clip left its container open (to the garbage collector)."""
    import io

    from capsule_triage.recompress import _finish_clip

    class Stream:
        def encode(self, frame=None):
            raise OSError("encoder failed")

    class Container:
        closed = False

        def mux(self, packets):
            pass

        def close(self):
            self.closed = True

    container = Container()
    with pytest.raises(OSError, match="encoder failed"):
        list(_finish_clip((container, Stream(), io.BytesIO(), (2, 2)), 1))
    assert container.closed
