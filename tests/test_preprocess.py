"""Preprocessing comes from the model's config; frames are made border-neutral."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from capsule_triage.model_config import ModelConfig
from capsule_triage import preprocess
from capsule_triage.preprocess import Preprocessor, circle_mask, fov_boxes


def _config(**kw):
    base = dict(architecture="resnet50", class_names=["a", "b"], abnormal_classes=["b"], input_size=32)
    return ModelConfig(**{**base, **kw})


def test_fov_boxes_take_float_frames_too():
    """Review rev25: the numpy bright mask (uint8 only) refused float frames the torch sum had taken."""
    from capsule_triage.preprocess import fov_boxes

    frames = torch.zeros(2, 3, 40, 60, dtype=torch.uint8)
    frames[:, :, 5:35, 20:50] = 200
    assert fov_boxes(frames) == fov_boxes(frames.float()) == [(5, 20, 30), (5, 20, 30)]


def test_normalisation_uses_the_models_own_mean_and_std():
    frames = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    bit = Preprocessor(_config(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), border="none"))(frames)
    imagenet = Preprocessor(_config(border="none"))(frames)
    assert torch.allclose(bit, torch.ones_like(bit))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(imagenet[0, :, 5, 5], expected, atol=1e-5)


def test_circle_mask_makes_the_border_the_mean_colour():
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = Preprocessor(_config(input_size=64, border="circle", border_radius=0.89))(frames)
    mask = circle_mask(64, 0.89)[0, 0].bool()
    assert (out[:, :, ~mask] == 0).all() and (out[:, :, mask] != 0).any()
    assert not mask[0, 0] and mask[32, 32] and mask[32, 4] and not mask[32, 1]  # radius 28.5 px at 64
    # whatever the border holds (black, text, another camera's shape), the output is the same
    other = frames.clone()
    other[:, :, ~mask] = 0
    assert torch.equal(Preprocessor(_config(input_size=64))(other), out)


def test_centre_square_crop_and_resize():
    frames = torch.zeros((1, 3, 40, 80), dtype=torch.uint8)
    frames[:, :, :, 20:60] = 255  # the centre square is white, the sides black
    out = Preprocessor(_config(input_size=20, border="none", mean=(0, 0, 0), std=(1, 1, 1)))(frames)
    assert out.shape == (1, 3, 20, 20) and torch.allclose(out, torch.ones_like(out), atol=1e-4)


def test_fov_crop_finds_the_bright_field_of_view():
    frame = np.zeros((100, 160, 3), np.uint8)
    frame[20:80, 60:120] = 200  # field of view, off-centre
    boxes = fov_boxes(torch.from_numpy(frame[None]).permute(0, 3, 1, 2))
    top, left, side = boxes[0]
    assert side == 60 and top == 20 and left == 60
    out = Preprocessor(_config(input_size=30, border="fov", border_radius=1.5, mean=(0, 0, 0), std=(1, 1, 1)))(
        torch.from_numpy(frame[None]).permute(0, 3, 1, 2))
    assert torch.allclose(out, torch.full_like(out, 200 / 255), atol=1e-3)


def test_fov_boxes_of_a_batch_are_each_frames_own():
    """Boxes of frames of one batch, found together (one copy back from a GPU per batch, not two
    synchronisations per frame), are those of each frame alone: an off-centre view, a dark frame,
    a view with burned-in text beside it, a view touching the edges."""
    rng = np.random.default_rng(3)
    frames = np.zeros((5, 90, 160, 3), np.uint8)
    frames[0, 10:80, 30:100] = 180
    frames[1] = rng.integers(0, 15, (90, 160, 3))  # dark: the centre square
    frames[2, 5:85, 40:120] = 120
    frames[2, 80:84, 2:30] = 255  # text in the black border, rows 80-83 bright for 28 of 160 columns
    frames[3, :, 20:150] = 90
    frames[4, 30:60, 10:30] = 250  # too small to be a view: the centre square
    boxes = fov_boxes(torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert [fov_boxes(torch.from_numpy(frame[None]).permute(0, 3, 1, 2))[0] for frame in frames] == boxes
    assert boxes[0] == (10, 30, 70) and boxes[1] == boxes[4] == (0, 35, 90) and boxes[3] == (0, 40, 90)
    assert boxes[2] == (5, 40, 80)
    frames[4] = 0
    frames[4, 10:80, 40:110] = (20, 20, 21)  # mean 20.3 of 255: below the brightness threshold (0.08 = 20.4 of 255)
    assert fov_boxes(torch.from_numpy(frames[4:]).permute(0, 3, 1, 2)) == [(0, 35, 90)]
    frames[4, 10:80, 40:110] = (20, 21, 21)  # mean 20.7: above
    assert fov_boxes(torch.from_numpy(frames[4:]).permute(0, 3, 1, 2)) == [(10, 40, 70)]


def test_fov_boxes_pass_over_burned_in_text_and_find_a_small_view():
    """QA 16: white overlay text (patient id, date) in the black border beside the view pulled the
    crop onto the text; a view narrower than a quarter of a 16:9 frame's width was taken for none
    (the model scored the black centre square)."""
    frames = np.zeros((3, 180, 320, 3), np.uint8)
    frames[0, 30:150, 100:220] = 150  # the view
    frames[1] = frames[0]
    for row in range(4, 176, 8):  # lines of text left of the view, from above its top to below its bottom
        frames[1, row : row + 2, 5:80] = 255
    frames[2, 5:55, 5:55] = 150  # a small view in the top-left corner
    boxes = fov_boxes(torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert boxes[0] == boxes[1] == (30, 100, 120) and boxes[2] == (5, 5, 50)
    # Review: a view crossed by a dark band (a shadow, the lumen) wider than the gap is one view, not its larger part
    banded = frames[:1].copy()
    banded[:, :, 150:170] = 0  # a 20-column band through the view (gap: 180 / 32 = 5.6 columns)
    banded[:, 80:92] = 0  # and a 12-row one
    assert fov_boxes(torch.from_numpy(banded).permute(0, 3, 1, 2)) == [(30, 100, 120)]


def test_fov_boxes_keep_a_dim_view_whose_lit_walls_a_dark_lumen_parts():
    """rev80 #1: a rule taking the fuller of two side-by-side pictures (QA 81 #2, a twin view) cropped such a view to one
    wall, (90, 15, 80): a lit region wider than tall, split by the dark lumen, is what one view looks like as often as two
    pictures do, and boxes alone cannot tell them apart. The view's whole box is kept."""
    frame = np.zeros((256, 256, 3), np.uint8)
    cv2.circle(frame, (128, 128), 120, (15, 10, 8), -1)  # below the brightness threshold: only the walls count
    frame[90:170, 15:95] = (150, 90, 70)
    frame[90:170, 165:240] = (140, 85, 65)
    assert fov_boxes(torch.from_numpy(frame[None]).permute(0, 3, 1, 2)) == [(18, 15, 225)]


def test_fov_boxes_leave_out_text_close_beside_a_round_view():
    """QA 25: a patient id in the black corner beside a round view, closer to it than the gap (1/32 of the short
    side), shared the view's columns: the crop slid onto the text (here to (0, 58, 180): 60 columns of text in
    the model's input, the circle's right side cut off). Text is small parts of its own; the view one large part."""
    frame = np.zeros((180, 320, 3), np.uint8)
    cv2.circle(frame, (200, 90), 85, (150, 110, 90), -1)  # columns 116-284 at least 9 rows bright
    for row in (6, 18, 30):  # three lines of 'glyphs' (4 x 8 px, 2 px apart), the last ending 4 columns before the view
        for x in range(12, 110, 6):
            frame[row : row + 8, x : x + 4] = 255
    assert fov_boxes(torch.from_numpy(frame[None]).permute(0, 3, 1, 2)) == [(6, 116, 169)]


def test_fov_boxes_of_dim_views_and_text_at_the_size_they_run(monkeypatch):
    """Review rev23, at the 448 x 796 a 224 px model reads (the closing acts there, not at 180 px): text 10 px
    beside a circle is left out; a dim view (8% of its pixels bright) with text beside it keeps the stretches'
    box (the first fix cropped onto the text alone: (151, 25, 150)); a speckled view is not shrunk."""
    def box(frame):
        return fov_boxes(torch.from_numpy(frame[None]).permute(0, 3, 1, 2))[0]

    def circle():
        frame = np.zeros((448, 796, 3), np.uint8)
        cv2.circle(frame, (398, 224), 210, (150, 110, 90), -1)
        return frame

    frame = circle()
    for row in range(150, 300, 14):  # a text block ending 10 px before the circle
        for x in range(58, 178, 7):
            frame[row : row + 10, x : x + 5] = 255
    (top, left, side), plain = box(frame), box(circle())
    assert plain == (15, 189, 419) and (top, side) == (15, 419) and abs(left - 189) <= 2  # the halving's rounding (was 109)
    rng = np.random.default_rng(0)
    for share in (0.3, 0.08):
        dim = circle()
        inside = dim.any(axis=2)
        dim[inside] = 0
        dim[inside & (rng.random(inside.shape) < share)] = 60
        for row in range(150, 300, 14):  # text 30 px left of the dim view
            for x in range(38, 158, 7):
                dim[row : row + 10, x : x + 5] = 255
        found = box(dim)
        with monkeypatch.context() as m:  # the rows' and columns' stretches alone
            m.setattr(preprocess, "_without_specks", lambda mask, top, bottom, left, right, gap: (top, bottom, left, right))
            assert found == box(dim), share


def test_bad_input_dtype_is_refused():
    with pytest.raises(ValueError, match=r"expects uint8 \[N,3,H,W\]"):
        Preprocessor(_config())(torch.zeros((1, 3, 8, 8)))


@pytest.mark.gpu
def test_preprocess_on_cuda_matches_cpu():
    frames = torch.randint(0, 256, (4, 3, 48, 64), dtype=torch.uint8)
    pre = Preprocessor(_config())
    assert torch.allclose(pre.cuda()(frames.cuda()).cpu(), Preprocessor(_config())(frames), atol=1e-4)
