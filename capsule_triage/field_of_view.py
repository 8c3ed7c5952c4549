"""Whether a frame shows the endoscope's field of view at all. Numpy and OpenCV only: every backend
(ONNX Runtime and OpenVINO run without PyTorch) tests its frames here before they are ranked."""

from __future__ import annotations

import cv2
import numpy as np

FOV_LUMA_THRESHOLD = 0.08  # a pixel brighter than this (0-1 scale) is inside the endoscope's view
VIEW_MIN_SIDE = 1 / 4  # the smallest view, as a fraction of the frame's short side (fov_boxes and has_view)
VIEW_GRID = 48  # has_view looks at about this many pixels along the frame's short side
FLAT_LUMA_IQR = 3  # a bright part whose middle half of pixels spans fewer grey levels (of 255) is a flat screen
GREY_SATURATION = 20  # a bright part whose median pixel's saturation ((max - min) / max of R, G, B) is below this % is grey: a panel, not tissue
NO_VIEW_KINDS = "black, too dark, burned-in text only, or a blank or test-pattern screen"  # said with every count of them
NO_VIEW_WARN_SHARE = 0.5  # a study with at least this share of frames without a view is named (Warning:, batch index)
SMOOTH_SHARE = 0.6  # a screen: at least this share of its pixels equal (within SAME_LEVELS) to the one below them
SAME_LEVELS = 4  # grey levels (every channel) within which two pixels count as equal
BAR_EDGES = 3  # colour bars: at least this many columns where half the rows step by more than BAR_STEP levels
BAR_STEP = 40
BLUE_SHARE = 0.9  # a blue screen: at least this share of its pixels blue (hue 190-270 degrees, saturation >= 20 %)


def brightness(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """uint16: R + G + B of uint8 channels (3 x the mean, 0-765)."""
    total = red.astype(np.uint16)
    total += green
    total += blue
    return total


def bright_pixels(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """bool: where the mean of uint8 R, G, B is above :data:`FOV_LUMA_THRESHOLD` (inside a view)."""
    return brightness(red, green, blue) > FOV_LUMA_THRESHOLD * 255 * 3


def mostly_without_view(without: int, frames: int) -> bool:
    """Whether a study's frames without a view are :data:`NO_VIEW_WARN_SHARE` of it or more."""
    return frames > 0 and without >= NO_VIEW_WARN_SHARE * frames


def has_view(frames_nhwc: np.ndarray) -> np.ndarray:
    """bool [N]: which uint8 [N, H, W, 3] frames show a field of view at all.

    A frame shows one when its largest connected part of bright pixels (:func:`bright_pixels`)
    covers at least the area of a square :data:`VIEW_MIN_SIDE` of the frame's short side across
    (the smallest view :func:`capsule_triage.preprocess.fov_boxes` takes), is not flat (the middle
    half of its pixels' brightness spans at least :data:`FLAT_LUMA_IQR` grey levels) and is not
    grey (its median pixel's saturation is at least :data:`GREY_SATURATION` %; dimming keeps it). A
    black frame, a view too dark to read (before the scope goes in, after it comes out), burned-in
    text alone (each glyph a small part of its own), a flat screen (a processor's blue "no signal"),
    a grey one (a panel of patient details, shaded or not) or a generated one (colour bars, a smooth blue
    screen: :func:`_screen`) shows none: a model's score of such a
    frame means nothing, and its thumbnail would show the patient's name (QA passes 27 and 28,
    review rev26). A grey (monochrome) video shows none either: endoscopes record colour.

    Measured (2026-12-02): every real frame of ../shared/data (1,868 WCEBleedGen stills, the three
    clips) and of QA 26's gastroscope-style clips has a part at least 5.4 times that area, whose
    middle half spans 6.0 grey levels or more (1 % of the stills below 9.3) and whose median
    saturation is 35 % or more (1 % of the stills below 44 %, clips 49 %; QA 28's bluish-grey panels
    6-10 %); QA 27's black frames have none, its text-only frames 0.04 times the area. Counted on
    every ``step``-th pixel, about :data:`VIEW_GRID` along the short side: about 55 microseconds per
    336 px frame, 75 per 720p one, 40 % of it in OpenCV's connected components."""
    n, h, w, _ = frames_nhwc.shape
    step = max(1, min(h, w) // VIEW_GRID)
    small = frames_nhwc[:, ::step, ::step]
    total = brightness(small[..., 0], small[..., 1], small[..., 2])
    bright = (total > FOV_LUMA_THRESHOLD * 255 * 3).view(np.uint8)
    least = (VIEW_MIN_SIDE * min(bright.shape[1:])) ** 2
    out, saturation, level = np.zeros(n, dtype=bool), None, None
    for i, mask in enumerate(bright):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count < 2:
            continue
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        size = int(stats[largest, cv2.CC_STAT_AREA])
        if size < least:
            continue
        part = labels == largest
        cumulative = np.bincount(total[i][part], minlength=766).cumsum()  # quartiles from the histogram
        low, high = np.searchsorted(cumulative, (size / 4, 3 * size / 4))
        if high - low < 3 * FLAT_LUMA_IQR:
            continue
        if saturation is None:  # of every grid pixel in %, once per batch (most frames get here)
            top = np.maximum(np.maximum(small[..., 0], small[..., 1]), small[..., 2]).astype(np.uint16)
            spread = top - np.minimum(np.minimum(small[..., 0], small[..., 1]), small[..., 2])
            saturation = (spread * 100 // np.maximum(top, 1)).astype(np.uint8)
        out[i] = np.searchsorted(np.bincount(saturation[i][part], minlength=101).cumsum(), size / 2) >= GREY_SATURATION
        if out[i]:
            if level is None:  # once per batch, as saturation: brightness equal to the pixel below's (a screen's first sign)
                level = np.abs(np.diff(total.astype(np.int16), axis=1)) <= 3 * SAME_LEVELS
            out[i] = not _screen(small[i], part, level[i])
    return out


def _screen(grid: np.ndarray, part: np.ndarray, level: np.ndarray) -> bool:
    """Whether a bright, coloured part is a generated screen, not tissue: colour bars (a recorder's test pattern)
    or a smooth blue "no signal" screen; the shipped model scored both as bleeding (0.64-0.90). Both are smooth
    (:data:`SMOOTH_SHARE` of the pixels inside the part, two grid steps from its edge, equal to the one below in
    every channel within :data:`SAME_LEVELS`); colour bars also step sharply in the same columns (:data:`BAR_EDGES`),
    a blue screen is blue (:data:`BLUE_SHARE`). ``level``: where the brightness (R + G + B) equals the one below
    within 3 x SAME_LEVELS (cheap, for the whole batch: a frame that is not smooth by it is not smooth at all).

    Measured (2026-12-02, /tmp/s43): of the 1,868 WCEBleedGen stills (also through H.264 at CRF 35 at 336 px), the
    two WCE clips and the 720p laparoscopic clip, those with three such columns are at most 0.23 smooth (0.54
    with two), and none is more than 0.5 % blue; 75 % / 100 % / SMPTE bars at 336 and 720 px, with Gaussian noise of
    up to 4 levels, through H.264 at CRF 23 and 35: 0.80-1.00 smooth, 6-7 columns; blue gradients 0.89-0.99 smooth,
    100 % blue. Adds 20-35 microseconds per 336 px frame to has_view (68-84 before), 10 per 720p one (120)."""
    inner = cv2.erode(part.view(np.uint8), _KERNEL, iterations=2, borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
    pairs = inner[1:] & inner[:-1]
    counted = np.count_nonzero(pairs)
    if counted < 16 or np.count_nonzero(level & pairs) < SMOOTH_SHARE * counted:
        return False  # textured: tissue (most frames end here)
    pixels = grid.astype(np.int16)
    down = np.abs(pixels[1:] - pixels[:-1]).max(axis=-1) <= SAME_LEVELS
    if np.count_nonzero(down & pairs) < SMOOTH_SHARE * counted:
        return False
    across = inner[:, 1:] & inner[:, :-1]
    steps = (np.abs(pixels[:, 1:] - pixels[:, :-1]).max(axis=-1) > BAR_STEP) & across
    rows = across.sum(axis=0)
    if np.count_nonzero((rows >= 8) & (2 * steps.sum(axis=0) >= rows)) >= BAR_EDGES:
        return True
    hsv = cv2.cvtColor(np.ascontiguousarray(grid), cv2.COLOR_RGB2HSV)  # hue 0-180, saturation 0-255
    blue = (hsv[..., 0] >= 95) & (hsv[..., 0] <= 135) & (hsv[..., 1] >= 51)  # 190-270 degrees, saturation >= 20 %
    return np.count_nonzero(blue & part) >= BLUE_SHARE * np.count_nonzero(part)


_KERNEL = np.ones((3, 3), np.uint8)
