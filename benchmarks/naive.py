"""The loop a user would write first: PyAV frame by frame, torchvision transforms, fp32, batch 1."""

from __future__ import annotations

import time
from pathlib import Path

import av
import torch
import torchvision.transforms as T


def naive_fps(video: Path, model: torch.nn.Module, *, size: int, mean, std, frames: int) -> float:
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    model = model.eval()
    done, start = 0, None
    with av.open(str(video)) as container, torch.no_grad():
        for frame in container.decode(video=0):
            x = transform(frame.to_image()).unsqueeze(0)
            model(x).softmax(1)
            done += 1
            if done == 2:  # two warm-up frames
                start = time.perf_counter()
            if done == frames + 2:
                break
    return (done - 2) / (time.perf_counter() - start)
