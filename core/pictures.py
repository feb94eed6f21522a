"""Pictures as people see them and as the networks see them: RGB and Lab in network scale
converted both ways, grids of tiles, and image files written whole."""
import os

import cv2
import numpy as np
import torch

from utils import UserError, atomic_write


# ---------------------------------------------------------------- Lab conversion
# The networks see Lab in network scale: L/50 - 1, a/127, b/127, so that every channel spans
# about [-1, 1]; these constants and the functions below are the only place that scale is coded.
L_HALF_RANGE = 50.0
AB_RANGE = 127.0
# OpenCV's float conversion works per pixel, so
# a stack of images is handed to it as wide rows of pixels, in chunks that reuse one float buffer:
# that runs about 6x faster than one tall image of 32-pixel rows, and never holds two float copies.
_LAB_CHUNK = 4096
_NETWORK_SCALE = np.array([1 / L_HALF_RANGE, 1 / AB_RANGE, 1 / AB_RANGE], np.float32)


def rgb_to_lab(rgb_uint8, network_scale=False):
    """(N, H, W, 3) uint8 RGB -> (N, H, W, 3) float32 Lab (L in [0, 100]), or in network scale."""
    n, h, w, _ = rgb_uint8.shape
    pixels = np.ascontiguousarray(rgb_uint8).reshape(n, h * w, 3)
    lab = np.empty((n, h * w, 3), np.float32)
    buffer = np.empty((min(n, _LAB_CHUNK), h * w, 3), np.float32)
    for first in range(0, n, _LAB_CHUNK):
        last = min(n, first + _LAB_CHUNK)
        chunk = buffer[:last - first]
        np.multiply(pixels[first:last], np.float32(1 / 255), out=chunk)
        cv2.cvtColor(chunk, cv2.COLOR_RGB2Lab, dst=lab[first:last])
        if network_scale:
            lab[first:last] *= _NETWORK_SCALE
            lab[first:last, :, 0] -= 1.0
    return lab.reshape(n, h, w, 3)


def lab_to_rgb(lab):
    """(N, H, W, 3) float32 Lab -> (N, H, W, 3) uint8 RGB, clipped and rounded."""
    n, h, w, _ = lab.shape
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32).reshape(n, h * w, 3), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8).reshape(n, h, w, 3)


def network_to_rgb(L, ab):
    """Network-scale L (N, 1, H, W) and ab (N, 2, H, W) tensors -> (N, H, W, 3) uint8 RGB."""
    lab = torch.cat([(L.float() + 1.0) * L_HALF_RANGE, ab.float() * AB_RANGE], dim=1)
    return lab_to_rgb(lab.permute(0, 2, 3, 1).cpu().numpy())


def lightness_to_network(lightness):
    """L in [0, 100] (a float32 array) -> network scale."""
    return lightness / np.float32(L_HALF_RANGE) - np.float32(1)


def ab_from_network(ab):
    """Network-scale ab (a float32 array) -> Lab's a and b."""
    return ab * np.float32(AB_RANGE)


def with_chroma_gain(ab, gain):
    """The saturation dial: network-scale ab (a tensor or an array) times `gain`, kept in the
    network's range [-1, 1]; a gain of 1 returns `ab` itself, untouched."""
    if gain == 1:
        return ab
    scaled = ab * gain
    return scaled.clamp(-1, 1) if torch.is_tensor(scaled) else np.clip(scaled, -1, 1)


# ---------------------------------------------------------------- pictures

def image_grid(rows, border=6, scale=2.2, column_labels=None):
    """Rows of equally sized uint8 RGB tiles (each (N, H, W, 3)) -> one picture, tiles separated
    and framed by `border` white pixels, scaled with nearest-neighbour; optional column titles."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.full((n_rows * (h + border) + border, n_cols * (w + border) + border, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = border + i * (h + border), border + j * (w + border)
            grid[y:y + h, x:x + w] = tile
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if column_labels:
        grid = np.concatenate([_column_header(column_labels, (w + border) * scale, border * scale, grid.shape[1]), grid])
    return grid


HEADER_FONT, HEADER_THICKNESS, HEADER_SIZES = cv2.FONT_HERSHEY_SIMPLEX, 1, (0.3, 0.26, 0.22)


def _text_width(text, size):
    return cv2.getTextSize(text, HEADER_FONT, size, HEADER_THICKNESS)[0][0]


def header_lines(label, width, max_lines=4):
    """(lines, font size) for a column title `width` pixels wide: wrapped at spaces only, at the
    largest size in HEADER_SIZES at which every word fits; at the smallest, a word that still
    does not fit is shortened and ends in '.', so no word is ever broken across lines."""
    words = label.split() or ['']
    size = next((s for s in HEADER_SIZES if all(_text_width(w, s) <= width for w in words)), HEADER_SIZES[-1])
    lines = []
    for word in (_shortened(w, size, width) for w in words):
        if lines and _text_width(lines[-1] + ' ' + word, size) <= width:
            lines[-1] += ' ' + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [_shortened(' '.join(lines[max_lines - 1:]), size, width)]
    return lines, size


def _shortened(text, size, width):
    """`text`, cut and ended with '.' until it fits `width` pixels."""
    while _text_width(text, size) > width and len(text) > 2:
        text = text[:-2] + '.'
    return text


def _column_header(labels, column_width, offset, width):
    """White band with each label over its column (see header_lines)."""
    fitted = [header_lines(label, column_width - 3) for label in labels]
    line_h = 10
    band = np.full((line_h * max(len(lines) for lines, _ in fitted) + 6, width, 3), 255, np.uint8)
    for j, (lines, size) in enumerate(fitted):
        for k, text in enumerate(lines):
            x = int(offset + j * column_width)
            cv2.putText(band, text, (x, line_h * (k + 1)), HEADER_FONT, size, (40, 40, 40), HEADER_THICKNESS, cv2.LINE_AA)
    return band


def write_encoded(path, bgr, params=()):
    """Encode an OpenCV (BGR) image by the file's extension and write it atomically; OSError on failure."""
    ok, encoded = cv2.imencode(os.path.splitext(str(path))[1] or '.png', bgr, list(params))
    if not ok:
        raise OSError(f"OpenCV cannot encode it as {os.path.splitext(str(path))[1]}")
    atomic_write(str(path), lambda f: f.write(encoded.tobytes()))


def write_image(path, rgb_uint8):
    try:
        write_encoded(path, cv2.cvtColor(rgb_uint8, cv2.COLOR_RGB2BGR))
    except OSError as e:
        raise UserError(f"could not write the picture {path} ({e}): check that its folder is writable")
