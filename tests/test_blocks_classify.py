"""Classifier: the subject / flat / detail rules on constructed images, ratio enforcement order, preview colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zimage_core.blocks import (CLASS_COLORS, CLASS_NAMES, DETAIL, FLAT, ROUTE_COLORS, SUBJECT,
                                classification_preview, classify_blocks, enforce_heavy_ratio, saliency_map,
                                slice_blocks)
from zimage_core.errors import InputError


def constructed_image() -> np.ndarray:
    """3x3 grid of 64 px cells: noise texture at (0,0), a soft ramp at (1,1), constant gray elsewhere."""
    rng = np.random.default_rng(0)
    img = np.full((192, 192, 3), 0.5, np.float32)
    img[:64, :64] = rng.random((64, 64, 3))
    ramp = np.linspace(0.3, 0.7, 64, dtype=np.float32)
    img[64:128, 64:128] = ramp[None, :, None]
    return img


def expected_labels(img: np.ndarray, s: np.ndarray, blocks) -> list[int]:
    """The classification and routing rules, written independently with numpy."""
    t = np.percentile(s, 85)
    gray = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) * 255.0
    out = []
    bs = blocks.block
    for _, y, x in blocks.positions.tolist():
        sb = s[y:y + bs, x:x + bs]
        if sb.max() > t and sb.mean() > 0.8 * t:
            out.append(SUBJECT)
        elif gray[y:y + bs, x:x + bs].var() < 175:
            out.append(FLAT)
        else:
            out.append(DETAIL)
    return out


def test_constructed_image_rules():
    img = constructed_image()
    bl = slice_blocks(img, 64, 0)
    s = saliency_map(img)
    c = classify_blocks(bl, s)
    labels = c.labels.tolist()
    assert labels == expected_labels(img, s[0].numpy(), bl)
    assert labels[0] == SUBJECT  # textured cell
    assert labels[4] == DETAIL  # soft ramp: high pixel variance, low saliency
    assert labels[8] == FLAT  # constant cell far from the others
    assert c.heavy.tolist() == [lab != FLAT for lab in labels]
    assert c.thresholds[0] == pytest.approx(float(np.percentile(s[0].numpy(), 85)), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_rules_match_independent_computation_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((2, 150, 170, 3), np.float32)
    for b in range(2):
        base = rng.random(3).astype(np.float32)
        img[b] = base
        for _ in range(4):  # random rectangles of texture, ramps, colour
            y, x = rng.integers(0, 120), rng.integers(0, 140)
            hh, ww = rng.integers(10, 60), rng.integers(10, 60)
            kind = rng.integers(3)
            patch = img[b, y:y + hh, x:x + ww]
            if kind == 0:
                patch[:] = rng.random(patch.shape)
            elif kind == 1:
                patch[:] = np.linspace(0, 1, patch.shape[1])[None, :, None]
            else:
                patch[:] = rng.random(3)
    bl = slice_blocks(img, 48, 12)
    s = saliency_map(img)
    c = classify_blocks(bl, s)
    per = bl.per_image
    for b in range(2):
        sub = type(bl)(bl.tensor[b * per:(b + 1) * per], bl.positions[b * per:(b + 1) * per], bl.source_size, 1,
                       bl.block, bl.overlap, bl.ys, bl.xs)
        assert c.labels[b * per:(b + 1) * per].tolist() == expected_labels(img[b], s[b].numpy(), sub)


def test_ratio_enforcement_order():
    labels = torch.tensor([SUBJECT, DETAIL, DETAIL, DETAIL, FLAT, FLAT, SUBJECT, FLAT])
    sal = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3, 0.8, 0.05, 0.4])
    natural = labels != FLAT
    img = torch.zeros(8, dtype=torch.long)
    # 5 heavy (2 subject + 3 detail); ratio 3/8 → drop the 2 least salient detail blocks (idx 2 then 1)
    h = enforce_heavy_ratio(labels, natural, sal, img, 3 / 8)
    assert torch.nonzero(h).flatten().tolist() == [0, 3, 6]
    # ratio 0 → only subjects stay, even below the target
    assert torch.nonzero(enforce_heavy_ratio(labels, natural, sal, img, 0.0)).flatten().tolist() == [0, 6]
    # ratio 7/8 → promote the 2 most salient flat blocks (idx 5 at 0.8, then 7 at 0.4)
    h = enforce_heavy_ratio(labels, natural, sal, img, 7 / 8)
    assert torch.nonzero(~h).flatten().tolist() == [4]
    assert bool(enforce_heavy_ratio(labels, natural, sal, img, 1.0).all())


def test_ratio_is_per_image_and_subjects_never_move():
    labels = torch.tensor([SUBJECT, SUBJECT, SUBJECT, FLAT, DETAIL, FLAT, FLAT, FLAT])
    sal = torch.linspace(0, 1, 8)
    img = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    h = enforce_heavy_ratio(labels, labels != FLAT, sal, img, 0.25)
    assert h[:3].all()  # image 0: 3 subjects > target 1, all kept
    assert not h[3]
    assert int(h[4:].sum()) == 1 and h[4]  # image 1: target 1, the detail block already fills it


def test_ratio_on_real_classification_and_bad_ratio():
    img = constructed_image()
    bl = slice_blocks(img, 64, 0)
    s = saliency_map(img)
    for r in (0.0, 0.3, 0.5, 1.0):
        c = classify_blocks(bl, s, heavy_ratio=r)
        n_subject = int((c.labels == SUBJECT).sum())
        assert int(c.heavy.sum()) == max(n_subject, round(r * 9))
        assert c.heavy[c.labels == SUBJECT].all()
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError):
            classify_blocks(bl, s, heavy_ratio=bad)


def test_preview_colours_blocks_by_class_and_route():
    img = constructed_image()
    bl = slice_blocks(img, 64, 0)
    c = classify_blocks(bl, saliency_map(img))
    pv = classification_preview(torch.from_numpy(img)[None], bl, c, alpha=1.0)
    assert pv.shape == (1, 192, 192, 3)
    for k, (_, y, x) in enumerate(bl.positions.tolist()):
        centre = pv[0, y + 32, x + 32]
        want = torch.tensor(CLASS_COLORS[CLASS_NAMES[int(c.labels[k])]]) / 255.0
        assert torch.allclose(centre, want, atol=1e-6)
        route = "heavy" if c.heavy[k] else "light"
        assert torch.allclose(pv[0, y, x + 32], torch.tensor(ROUTE_COLORS[route]) / 255.0, atol=1e-6)
    assert set(CLASS_NAMES) == set(CLASS_COLORS)
