"""The loop a user would write first: PyAV frame by frame, torchvision transforms, fp32, batch 1."""

from __future__ import annotations

import time
from pathlib import Path

import av
import torch
import torchvision.transforms as T

WARM_UP_FRAMES = 2


def naive_fps(video: Path, model: torch.nn.Module, *, size: int, mean, std, min_seconds: float) -> float:
    """Frames per second of the loop over ``video`` for at least ``min_seconds`` (after two warm-up
    frames), starting again at its first frame if the clip ends sooner."""
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    model = model.eval()
    done, start = 0, None
    with torch.no_grad():
        while True:
            with av.open(str(video)) as container:
                for frame in container.decode(video=0):
                    x = transform(frame.to_image()).unsqueeze(0)
                    model(x).softmax(1)
                    done += 1
                    if done == WARM_UP_FRAMES:
                        start = time.perf_counter()
                    elif start is not None and time.perf_counter() - start >= min_seconds:
                        return (done - WARM_UP_FRAMES) / (time.perf_counter() - start)
