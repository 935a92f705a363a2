"""The synthetic half of the plate and text evaluation set, generated at bench time.

Licence plates in five national styles and text (name badges, screens, paper) are
rendered with the fonts on the machine (DejaVu / Liberation where installed, Pillow's
bundled font otherwise), warped in perspective and pasted onto the real photos and video
frames of ``../shared/media``; each sample carries its ground-truth boxes (the whole plate;
each text line). Everything is a function of the seed, so two runs give the same set; no
image is written to the repository.

    python bench/plates_data.py --show 3 --out /tmp/plates-samples   # look at a few

Plate widths are drawn log-uniformly from 20 to 200 px, text line heights from 8 to 60 px.
Samples with an even index form the tuning split, odd ones the held-out split.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# EGOVEIL_MEDIA points elsewhere when the checkout is not beside shared/ (a git worktree).
MEDIA = os.environ.get("EGOVEIL_MEDIA", os.path.join(ROOT, "..", "shared", "media"))

_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
BOLD_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansCondensed-Bold.ttf", "LiberationSans-Bold.ttf",
              "LiberationSansNarrow-Bold.ttf", "DejaVuSansMono-Bold.ttf")
TEXT_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "LiberationSans-Regular.ttf",
              "LiberationSerif-Regular.ttf", "DejaVuSansCondensed.ttf",
              "LiberationMono-Regular.ttf")

PLATE_STYLES = ("eu", "uk_front", "uk_rear", "us", "dark")
TEXT_KINDS = ("badge", "screen", "paper")
FIRST = ("Anna", "Lukas", "Maria", "Jonas", "Sofia", "Mehmet", "Chloé", "Oliver", "Yuki",
         "Priya", "Mateo", "Aisha", "Noah", "Elena", "Kwame", "Ingrid", "Tomás", "Li")
LAST = ("Schmidt", "Rossi", "Dubois", "Kowalski", "Nguyen", "García", "Johansson", "Okafor",
        "Müller", "Tanaka", "Papadopoulos", "Silva", "Novak", "Hughes", "Andersen", "Moreau")
ROLES = ("Visitor", "Engineering", "Sales", "Security", "Guest", "Staff", "Nurse", "Volunteer")
PHRASES = ("Dear", "Invoice no.", "Appointment", "Account", "Patient", "Address", "Re:",
           "Meeting with", "Signed", "Phone", "Date of birth", "Reference")


def font_path(names: tuple[str, ...], rng: random.Random) -> str | None:
    found = [os.path.join(d, n) for n in names for d in _FONT_DIRS
             if os.path.isfile(os.path.join(d, n))]
    return rng.choice(found) if found else None


def load_font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


@dataclass
class Sample:
    """One evaluation image and its ground truth.

    Attributes:
        key: a stable name (background and index), never shown in an output.
        image: RGB uint8.
        plates: (N, 4) plate boxes (around the warped plate).
        plate_widths: (N,) each plate's width before the perspective warp, in pixels.
        lines: (M, 4) text-line boxes (around the warped line).
        line_heights: (M,) each line's height before the warp, in pixels.
        split: "tune" or "held-out".
    """

    key: str
    image: np.ndarray
    plates: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    plate_widths: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    lines: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    line_heights: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    split: str = "tune"


def plate_text(style: str, rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    pick = lambda n: "".join(rng.choice(letters) for _ in range(n))  # noqa: E731
    digits = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    if style in ("uk_front", "uk_rear"):
        return f"{pick(2)}{digits(2)} {pick(3)}"
    if style == "us":
        return f"{digits(1)}{pick(3)}{digits(3)}"
    if style == "eu":
        return rng.choice([f"{pick(2)} {digits(3)} {pick(2)}", f"{pick(1)} {pick(2)} {digits(4)}",
                           f"{pick(2)}-{digits(3)}-{pick(2)}"])
    return f"{pick(3)} {digits(4)}"


def render_plate(style: str, rng: random.Random) -> np.ndarray:
    """An RGBA plate image about 520 px wide (US: 2:1, others about 4.7:1)."""
    width, height = (440, 220) if style == "us" else (520, 112)
    background = {"eu": (246, 246, 240), "uk_front": (248, 248, 248), "uk_rear": (250, 208, 20),
                  "us": (240, 242, 246), "dark": (18, 18, 20)}[style]
    ink = (235, 235, 235) if style == "dark" else rng.choice([(12, 12, 14), (18, 30, 110)])
    plate = Image.new("RGBA", (width, height), background + (255,))
    draw = ImageDraw.Draw(plate)
    draw.rounded_rectangle([2, 2, width - 3, height - 3], radius=10, outline=ink + (255,),
                           width=4)
    left = 12
    if style == "eu":
        draw.rectangle([6, 6, 52, height - 7], fill=(0, 51, 153, 255))
        code = load_font(font_path(BOLD_FONTS, rng), 30)
        draw.text((29, height - 28), rng.choice(["D", "F", "I", "NL", "PL", "E"]), font=code,
                  fill=(255, 255, 255, 255), anchor="ms")
        left = 58
    text = plate_text(style, rng)
    top, bottom = (58, height - 34) if style == "us" else (12, height - 12)
    if style == "us":
        state = load_font(font_path(BOLD_FONTS, rng), 34)
        draw.text((width / 2, 44), rng.choice(["WASHINGTON", "California", "OREGON", "Texas"]),
                  font=state, fill=rng.choice([(180, 20, 30), (20, 60, 150)]) + (255,),
                  anchor="ms")
        small = load_font(font_path(TEXT_FONTS, rng), 22)
        draw.text((width / 2, height - 12), rng.choice(["Evergreen State", "dmv.gov", ""]),
                  font=small, fill=(60, 60, 60, 255), anchor="ms")
    # The largest font whose characters fit the plate's text area.
    path = font_path(BOLD_FONTS, rng)
    size = bottom - top
    while size > 10:
        font = load_font(path, size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        if x1 - x0 <= width - left - 16 and y1 - y0 <= bottom - top:
            break
        size -= 2
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    cx = (left + width - 8) / 2
    draw.text((cx - (x1 + x0) / 2, (top + bottom) / 2 - (y1 + y0) / 2), text, font=font,
              fill=ink + (255,))
    return np.asarray(plate)


def render_text_item(kind: str, rng: random.Random) -> tuple[np.ndarray, list[list[float]]]:
    """An RGBA badge, screen or sheet of paper and the boxes of its text lines."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    if kind == "badge":
        lines = [name] + ([rng.choice(ROLES)] if rng.random() < 0.7 else [])
        background, ink, size = (252, 252, 250), (15, 15, 20), 44
        header = rng.choice([(200, 30, 40), (20, 90, 170), (30, 130, 70)])
    elif kind == "screen":
        lines = [name, f"{name.split()[0].lower()}.{name.split()[1].lower()}@example.org",
                 f"{rng.choice(PHRASES)} {rng.randint(10, 99)}/{rng.randint(1, 12)}"]
        dark = rng.random() < 0.5
        background = (28, 30, 36) if dark else (236, 240, 246)
        ink = (225, 228, 232) if dark else (20, 24, 30)
        size, header = 30, None
    else:
        lines = [f"{rng.choice(PHRASES)} {name}",
                 f"{rng.randint(1, 200)} {rng.choice(LAST)} Street",
                 f"{rng.choice(PHRASES)} {rng.randint(1000, 99999)}",
                 rng.choice(["Kind regards,", "Yours sincerely,", "Best,"])]
        lines = lines[:rng.randint(2, 4)]
        background, ink, size, header = (244, 241, 232), (25, 25, 30), 26, None
    font = load_font(font_path(BOLD_FONTS if kind == "badge" else TEXT_FONTS, rng), size)
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    extents = [probe.textbbox((0, 0), line, font=font) for line in lines]
    pad = size // 2
    top = pad + (size if header else 0)
    width = max(e[2] - e[0] for e in extents) + 2 * pad
    step = int(size * 1.45)
    height = top + step * len(lines) + pad
    item = Image.new("RGBA", (width, height), background + (255,))
    draw = ImageDraw.Draw(item)
    if header:
        draw.rectangle([0, 0, width, size], fill=header + (255,))
    boxes = []
    for i, (line, extent) in enumerate(zip(lines, extents)):
        x, y = pad - extent[0], top + i * step
        draw.text((x, y), line, font=font, fill=ink + (255,))
        x0, y0, x1, y1 = draw.textbbox((x, y), line, font=font)
        boxes.append([x0, y0, x1, y1])
    return np.asarray(item), boxes


def warp_paste(background: np.ndarray, item: np.ndarray, target_width: float,
               rng: random.Random, occupied: list, inner: list | None = None):
    """Paste ``item`` (RGBA) in perspective at about ``target_width`` px wide.

    Returns the boxes of the whole item and of each ``inner`` box in background pixels,
    or None when no free place was found.
    """
    h_img, w_img = background.shape[:2]
    ih, iw = item.shape[:2]
    scale = target_width / iw
    w, h = iw * scale, ih * scale
    # A random view: yaw foreshortens one side, pitch the other, roll rotates.
    yaw, pitch = rng.uniform(-0.2, 0.2), rng.uniform(-0.12, 0.12)
    roll = np.deg2rad(rng.uniform(-12, 12))
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    corners[:, 1] *= 1 + yaw * np.sign(corners[:, 0])
    corners[:, 0] *= 1 + pitch * np.sign(corners[:, 1])
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    corners = corners @ rot.T
    span = corners.max(0) - corners.min(0)
    if span[0] >= w_img - 4 or span[1] >= h_img - 4:
        return None
    for _ in range(40):
        cx = rng.uniform(span[0] / 2 + 2, w_img - span[0] / 2 - 2)
        cy = rng.uniform(span[1] / 2 + 2, h_img - span[1] / 2 - 2)
        dst = (corners + [cx, cy]).astype(np.float32)
        box = [*dst.min(0), *dst.max(0)]
        grown = [box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6]
        if not any(grown[0] < o[2] and o[0] < grown[2] and grown[1] < o[3] and o[1] < grown[3]
                   for o in occupied):
            break
    else:
        return None
    src = np.array([[0, 0], [iw, 0], [iw, ih], [0, ih]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(item, matrix, (w_img, h_img), flags=cv2.INTER_AREA,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # Match the scene a little: lighting, softness of small detail and sensor noise.
    rgb = warped[:, :, :3].astype(np.float32) * rng.uniform(0.6, 1.05)
    if target_width < 120 or rng.random() < 0.5:
        rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.3, 0.9))
    alpha = warped[:, :, 3:].astype(np.float32) / 255.0
    out = background.astype(np.float32) * (1 - alpha) + rgb * alpha
    out += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 2.0, out.shape) * alpha
    background[:] = np.clip(out, 0, 255).astype(np.uint8)
    occupied.append(box)
    inner_boxes = []
    for x0, y0, x1, y1 in inner or []:
        pts = cv2.perspectiveTransform(
            np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], np.float32), matrix)[0]
        inner_boxes.append([*pts.min(0), *pts.max(0)])
    return box, inner_boxes


def backgrounds(limit_per_source: int = 40) -> list[tuple[str, np.ndarray]]:
    """Real photos and video frames from ../shared/media, in a fixed order."""
    import av

    out = []
    for path in sorted(glob.glob(os.path.join(MEDIA, "images", "*.jpg"))):
        out.append((f"img-{os.path.basename(path)}", path))
    wider = sorted(glob.glob(os.path.join(MEDIA, "wider_dev", "images", "*.jpg")))
    out += [(f"wider-{os.path.basename(p)}", p) for p in wider[:limit_per_source]]
    images = []
    for key, path in out:
        image = cv2.imread(path)
        if image is not None:
            images.append((key, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    for video, every in (("arcade_1080p.mp4", 15), ("stage_360p.mp4", 40),
                         ("selfie_portrait.mp4", 80), ("aria_parking_plates.mp4", 6)):
        path = os.path.join(MEDIA, "videos", video)
        if not os.path.isfile(path):
            continue
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % every == 0:
                    images.append((f"{video}-{i}", frame.to_ndarray(format="rgb24")))
    return images


def make_samples(kind: str, seed: int = 14, per_image: int = 3) -> list[Sample]:
    """The synthetic set: ``kind`` is "plates" or "text"."""
    samples = []
    for index, (key, image) in enumerate(backgrounds()):
        rng = random.Random(f"{seed}-{kind}-{key}")
        canvas = image.copy()
        occupied: list = []
        boxes, widths, lines, heights = [], [], [], []
        limit = 0.3 * image.shape[1]
        # Real plates and text already in a background are not labelled: redacting them
        # counts as area outside the ground truth, so that figure is an upper bound.
        for _ in range(per_image):
            # Sizes are drawn until one fits the image (a 200 px plate on a 360 px photo
            # would not be a plate in a scene).
            if kind == "plates":
                plate = render_plate(rng.choice(PLATE_STYLES), rng)
                width = next((w for w in (float(np.exp(rng.uniform(np.log(20), np.log(200))))
                                          for _ in range(20)) if w <= limit), None)
                placed = width and warp_paste(canvas, plate, width, rng, occupied)
                if placed:
                    boxes.append(placed[0])
                    widths.append(width)
            else:
                item, inner = render_text_item(rng.choice(TEXT_KINDS), rng)
                tallest = max(b[3] - b[1] for b in inner)
                line_h = next((h for h in (float(np.exp(rng.uniform(np.log(8), np.log(60))))
                                           for _ in range(20))
                               if item.shape[1] * h / tallest <= 1.5 * limit), None)
                placed = line_h and warp_paste(canvas, item, item.shape[1] * line_h / tallest,
                                               rng, occupied, inner)
                if placed:
                    lines += placed[1]
                    heights += [(b[3] - b[1]) * line_h / tallest for b in inner]
        sample = Sample(key=f"{kind}-{index:03d}-{key}", image=canvas,
                        split="tune" if index % 2 == 0 else "held-out")
        if boxes:
            sample.plates = np.asarray(boxes, np.float32).reshape(-1, 4)
            sample.plate_widths = np.asarray(widths, np.float32)
        if lines:
            sample.lines = np.asarray(lines, np.float32).reshape(-1, 4)
            sample.line_heights = np.asarray(heights, np.float32)
        samples.append(sample)
    return samples


def draw(sample: Sample, detections: np.ndarray | None = None) -> np.ndarray:
    """BGR picture of a sample: ground truth green, detections red."""
    image = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
    for x0, y0, x1, y1 in np.concatenate([sample.plates, sample.lines]):
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), (0, 255, 0), 1)
    for x0, y0, x1, y1 in (detections if detections is not None else []):
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), (0, 0, 255), 1)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("plates", "text"), default="plates")
    parser.add_argument("--show", type=int, default=3, help="how many samples to write")
    parser.add_argument("--out", required=True, help="a folder outside the repository")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    samples = make_samples(args.kind)
    for sample in samples[:args.show]:
        cv2.imwrite(os.path.join(args.out, f"{sample.key}.png"), draw(sample))
    sizes = np.concatenate([s.plate_widths if args.kind == "plates" else s.line_heights
                            for s in samples])
    print(f"{len(samples)} images, {sizes.size} {args.kind}, sizes {sizes.min():.0f}-"
          f"{sizes.max():.0f} px")


if __name__ == "__main__":
    main()
