"""Anatomy layouts, per-video plans and drawing primitives for the synthetic echo generator.

The public API and the image model are described in :mod:`echotune.data.synthetic`. Conventions here:
images are square ``(S, S)``; coordinates are pixels with x to the right and y *down*; angles in layouts
are degrees with 0 = right and 90 = down; all maps are float32 in [0, 1] until the final uint8 cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

JET_VALVE = {"AR": "AV", "MR": "MV", "PR": "PV", "TR": "TV"}  # the valve each regurgitation leaks through
SYSTOLIC_JETS = ("MR", "TR")  # atrioventricular valves leak in systole; semilunar (AR, PR) in diastole


@dataclass(frozen=True)
class Chamber:
    """A blood pool: rotated ellipse (centre, semi-axes, angle of the ``ax`` axis) with a bright wall."""

    name: str
    cx: float
    cy: float
    ax: float
    ay: float
    angle: float
    kind: str  # "ventricle" | "atrium" | "vessel": how it moves with the cardiac cycle


@dataclass(frozen=True)
class Valve:
    """A valve: position, regurgitant-jet direction (into the receiving chamber), annulus half-width."""

    name: str
    x: float
    y: float
    angle: float
    radius: float
    opens: str  # "systole" | "diastole"


C, V = Chamber, Valve
# Normalised layouts (fractions of the image size) for a fan with its apex at (0.5, ~0.04) and depth ~0.92.
LAYOUTS: dict[str, tuple[tuple[Chamber, ...], tuple[Valve, ...]]] = {
    # Aortic-valve level: round aortic root in the middle, RV outflow arching over it to the pulmonic
    # valve (upper right) and pulmonary artery, right atrium left, left atrium below.
    "PSAX": (
        (
            C("AO", 0.50, 0.53, 0.085, 0.085, 0, "vessel"),
            C("LA", 0.52, 0.77, 0.16, 0.085, 0, "atrium"),
            C("RA", 0.27, 0.61, 0.10, 0.10, 20, "atrium"),
            C("RVOT", 0.47, 0.33, 0.20, 0.065, -15, "ventricle"),
            C("PA", 0.73, 0.43, 0.12, 0.05, 63, "vessel"),
        ),
        (
            V("AV", 0.50, 0.53, 0, 0.05, "systole"),
            V("PV", 0.66, 0.305, 190, 0.035, "systole"),
            V("TV", 0.29, 0.46, 100, 0.035, "diastole"),
        ),
    ),
    # Long axis: thin RV strip on top, LV running left, aortic root to the right, LA below it.
    "PLAX": (
        (
            C("RV", 0.52, 0.24, 0.20, 0.055, 4, "ventricle"),
            C("LV", 0.40, 0.47, 0.29, 0.11, 6, "ventricle"),
            C("AO", 0.75, 0.42, 0.15, 0.06, -8, "vessel"),
            C("LA", 0.72, 0.69, 0.12, 0.10, 0, "atrium"),
        ),
        (V("AV", 0.61, 0.44, 172, 0.04, "systole"), V("MV", 0.61, 0.59, 48, 0.045, "diastole")),
    ),
    # Apical 4-chamber: ventricles converge on the apex (LV right of screen), atria below, valves in a cross.
    "A4C": (
        (
            C("LV", 0.60, 0.40, 0.23, 0.115, 77, "ventricle"),
            C("RV", 0.40, 0.41, 0.20, 0.095, 102, "ventricle"),
            C("LA", 0.63, 0.77, 0.11, 0.095, 90, "atrium"),
            C("RA", 0.37, 0.76, 0.10, 0.095, 90, "atrium"),
        ),
        (V("MV", 0.625, 0.64, 92, 0.05, "diastole"), V("TV", 0.385, 0.62, 88, 0.045, "diastole")),
    ),
}


@dataclass(frozen=True)
class JetPlan:
    """One regurgitant jet of a video; per-frame size/visibility follow its phase of the cycle."""

    cls: str
    valve: str
    angle: float  # radians, jet axis
    length: float  # px at the peak of its phase
    w0: float  # half-width at the orifice (vena contracta), px
    w1: float  # half-width at the tip, px
    bend: float  # lateral offset of the tip as a fraction of length (eccentric, wall-hugging jets)
    vmax: float  # peak velocity in Nyquist units; > 1 aliases into the mosaic
    turb: float  # amplitude of the turbulent velocity noise
    alpha: float  # colour opacity over B-mode (contrast)
    always: bool  # forced visible in every frame (used to guarantee class coverage)


@dataclass(frozen=True)
class VideoPlan:
    """Everything fixed for one video (patient geometry, probe settings, which valves leak)."""

    view: str
    size: int
    apex: tuple[float, float]
    radius: float  # fan depth, px
    half_angle: float  # radians
    chambers: tuple[Chamber, ...]  # px
    valves: dict[str, Valve]  # px
    tissue: np.ndarray  # (S, S) smooth echogenicity texture, same anatomy in every frame
    gain: float
    atten: float
    colour_gain: float
    phase0: float
    jets: tuple[JetPlan, ...]
    distractors: float  # mean number of laminar-flow blobs per frame
    ecg: bool
    texts: tuple[str, str, str]  # on-screen readouts: velocity scale, heart rate, frame rate
    look: Look | None = None  # image-quality settings (None: a clean, mid-contrast default)
    blend: tuple[str, float] | None = None  # off-axis: (other view, weight) its layout was pulled towards


@dataclass(frozen=True)
class Look:
    """Per-video image quality: contrast, acoustic window, clutter and noise (see :func:`bmode`)."""

    tissue_level: float = 0.38  # mean tissue echogenicity
    tissue_contrast: float = 0.18  # amplitude of the smooth tissue texture
    wall: float = 0.75  # chamber-wall brightness
    wall_lateral_drop: float = 0.0  # 0..1: walls parallel to the beam fade (specular reflectors)
    wall_patchy: float = 0.0  # 0..1: share of wall lost to a poor acoustic window
    valve: float = 1.2  # leaflet brightness
    blood: float = 0.07  # echo level in blood pools
    haze: float = 0.0  # reverberation haze filling blood pools
    clutter: float = 0.3  # near-field clutter amplitude
    clutter_depth: float = 0.08  # its decay length (fraction of fan depth)
    noise: float = 0.0  # additive electronic noise
    gamma: float = 0.95
    shadows: tuple[tuple[float, float, float], ...] = ()  # rib shadows: (angle rad, half-width rad, depth 0..1)
    tgc: tuple[float, float, float] = (0.0, 0.0, 0.0)  # depth-gain curve coefficients (cos harmonics)


def plan_video(
    rng: np.random.Generator,
    view: str,
    size: int,
    allowed: tuple[str, ...],
    primary: str | None = None,
    always: bool = False,
    normal: bool = False,
) -> VideoPlan:
    """Draw a video: fan, jittered anatomy, settings and 0-2 jets from ``allowed``.

    ``primary`` (random if None) is the first jet's class; ``always`` keeps it visible in every frame and
    large enough to label; ``normal`` means no jets at all.

    Views are made realistically confusable: the whole heart is rotated, zoomed and shifted inside the
    sector, every chamber is jittered in size, aspect, angle and position, and OFF_AXIS_P of the videos are
    off-axis/foreshortened cuts whose layout is pulled part of the way towards another view's layout (shared
    chambers move, the other view's extra chambers show up partially). The label stays the view the video
    was planned as, and jets only ever sit at that view's own valves.
    """
    S = float(size)
    apex = (S / 2, S * rng.uniform(0.02, 0.06))
    radius = S * rng.uniform(0.86, 0.97)
    half = math.radians(rng.uniform(36, 46))
    blend = None
    if rng.random() < OFF_AXIS_P:
        others = [v for v in LAYOUTS if v != view]
        blend = (str(others[rng.integers(len(others))]), float(rng.uniform(0.15, 0.45)))
    layout = blended_layout(view, *blend) if blend else LAYOUTS[view]
    ghost_keep = rng.random(8) < 0.75  # which of the other view's extra chambers show up (partially)
    for attempt in range(40):  # re-draw until every valve sits well inside the fan, calming the pose each time
        calm = max(0.0, 1 - attempt / 30)
        chambers, valves = _place_anatomy(rng, layout, S, apex, radius, calm, ghost_keep)
        if all(_inside_fan(v.x, v.y, apex, radius - 0.07 * S, half - 0.07) for v in valves.values()):
            break
    n_jets = 0 if normal else int(rng.choice(3, p=(0.05, 0.45, 0.5)))
    # PR is visible in one view only (the others in two): weight it up so the classes come out balanced.
    weights = np.array([2.0 if c == "PR" else 1.0 for c in allowed])
    classes = [str(c) for c in rng.choice(allowed, size=len(allowed), replace=False, p=weights / weights.sum())]
    if primary is not None:
        classes = [primary] + [c for c in classes if c != primary]
    classes = classes[: max(n_jets, int(always))]
    forced = classes[0] if always else None
    jets = tuple(_plan_jet(rng, c, valves[JET_VALVE[c]], view, S, c == forced) for c in classes)
    return VideoPlan(
        view,
        size,
        apex,
        radius,
        half,
        chambers,
        valves,
        tissue=smooth_noise(rng, size, 0.04 * S),
        gain=float(np.exp(rng.uniform(-0.35, 0.3))),
        atten=rng.uniform(0.25, 1.4),
        colour_gain=rng.uniform(0.65, 1.0),
        phase0=rng.uniform(0, 2 * math.pi),
        jets=jets,
        distractors=rng.uniform(0.4, 2.0),
        ecg=bool(rng.random() < 0.6),
        texts=(f"{rng.integers(40, 80)}", f"HR{rng.integers(55, 110)}", f"{rng.integers(12, 30)}Hz"),
        look=_plan_look(rng, half),
        blend=blend,
    )


OFF_AXIS_P = 0.25  # share of off-axis / foreshortened videos
_SAME = {"RVOT": "RV"}  # chambers that are the same structure under another name in another view


def _nearest_angle(a: float, b: float, period: float) -> float:
    """``b`` shifted by whole periods to lie within period/2 of ``a``."""
    return b + period * round((a - b) / period)


def blended_layout(view: str, other: str, t: float) -> tuple[tuple[Chamber, ...], tuple[Valve, ...]]:
    """``view``'s normalised layout pulled a fraction ``t`` towards ``other``'s (an off-axis cut).

    Chambers both views show move/resize/turn linearly; chambers only ``view`` has shrink a little
    (foreshortened); ``other``'s extra chambers are appended as partial ``ghost-`` chambers sized by ``t``.
    Only ``view``'s valves are kept: one ``other`` also shows is interpolated, the rest follow the
    (inverse-distance weighted) motion of the shared chambers.
    """
    mine, my_valves = LAYOUTS[view]
    theirs, their_valves = LAYOUTS[other]
    by_name = {_SAME.get(c.name, c.name): c for c in theirs}
    lerp = lambda a, b: a + t * (b - a)  # noqa: E731
    chambers, moves = [], []
    for c in mine:
        o = by_name.pop(_SAME.get(c.name, c.name), None)
        if o is None:
            k = 1 - 0.35 * t
            chambers.append(replace(c, ax=c.ax * k, ay=c.ay * k))
            continue
        if c.ax < c.ay:  # compare the ellipses with the long axis first
            c = replace(c, ax=c.ay, ay=c.ax, angle=c.angle + 90)
        if o.ax < o.ay:
            o = replace(o, ax=o.ay, ay=o.ax, angle=o.angle + 90)
        n = replace(
            c,
            cx=lerp(c.cx, o.cx),
            cy=lerp(c.cy, o.cy),
            ax=lerp(c.ax, o.ax),
            ay=lerp(c.ay, o.ay),
            angle=lerp(c.angle, _nearest_angle(c.angle, o.angle, 180)),
        )
        chambers.append(n)
        moves.append((c.cx, c.cy, n.cx - c.cx, n.cy - c.cy))
    ghost = min(1.0, 1.6 * t)
    for o in by_name.values():
        chambers.append(replace(o, name=f"ghost-{o.name}", ax=o.ax * ghost, ay=o.ay * ghost))
    theirs_v = {v.name: v for v in their_valves}
    valves = []
    for v in my_valves:
        o = theirs_v.get(v.name)
        if o is not None:
            valves.append(
                replace(
                    v,
                    x=lerp(v.x, o.x),
                    y=lerp(v.y, o.y),
                    radius=lerp(v.radius, o.radius),
                    angle=lerp(v.angle, _nearest_angle(v.angle, o.angle, 360)),
                )
            )
            continue
        w = np.array([1 / ((v.x - x) ** 2 + (v.y - y) ** 2 + 1e-3) for x, y, _, _ in moves])
        dx = float(np.dot(w, [m[2] for m in moves]) / w.sum())
        dy = float(np.dot(w, [m[3] for m in moves]) / w.sum())
        valves.append(replace(v, x=v.x + dx, y=v.y + dy))
    return tuple(chambers), tuple(valves)


def _place_anatomy(rng, layout, S, apex, radius, calm=1.0, ghost_keep=None):
    """Layout -> px: fit to the fan depth, then rotate (+-25 deg), zoom (0.75-1.3) and shift the whole heart
    about its centre (all scaled down by ``calm``), then jitter every structure's position, size, aspect
    and angle. Ghost chambers (off-axis) are kept where ``ghost_keep`` says so."""
    fit = radius / (0.92 * S)
    zoom = math.exp(calm * rng.uniform(math.log(0.8), math.log(1.25)))
    rot = math.radians(calm * rng.uniform(-20, 20))
    shift = calm * rng.uniform(-0.05, 0.05, 2) * S
    centre = (apex[0] + fit * (0.5 * S - apex[0]), apex[1] + fit * (0.56 * S - apex[1]))
    cos, sin = math.cos(rot), math.sin(rot)
    k = fit * zoom * S

    def place(x, y, jitter):
        qx, qy = apex[0] + fit * (x * S - apex[0]) - centre[0], apex[1] + fit * (y * S - apex[1]) - centre[1]
        px = centre[0] + zoom * (cos * qx - sin * qy) + shift[0] + rng.normal(0, jitter * S)
        py = centre[1] + zoom * (sin * qx + cos * qy) + shift[1] + rng.normal(0, jitter * S)
        return px, py

    chambers, valves = [], {}
    layout_chambers, layout_valves = layout
    ghosts = 0
    for c in layout_chambers:
        if c.name.startswith("ghost-"):
            ghosts += 1
            if ghost_keep is not None and not ghost_keep[(ghosts - 1) % len(ghost_keep)]:
                continue
        cx, cy = place(c.cx, c.cy, 0.012)
        size, aspect = rng.uniform(0.88, 1.14), math.exp(rng.normal(0, 0.08))
        chambers.append(
            Chamber(
                c.name,
                cx,
                cy,
                c.ax * k * size * aspect,
                c.ay * k * size / aspect,
                c.angle + math.degrees(rot) + rng.normal(0, 6),
                c.kind,
            )
        )
    for v in layout_valves:
        x, y = place(v.x, v.y, 0.01)
        valves[v.name] = Valve(v.name, x, y, v.angle + math.degrees(rot) + rng.normal(0, 8), v.radius * k, v.opens)
    return tuple(chambers), valves


def _plan_look(rng, half) -> Look:
    """Per-video image quality: a spread of contrast, gain curves, acoustic windows, clutter and noise."""
    n_shadows = int(rng.choice(3, p=(0.65, 0.27, 0.08)))
    shadows = tuple(
        (float(rng.uniform(-half, half)), float(rng.uniform(0.04, 0.11)), float(rng.uniform(0.3, 0.7)))
        for _ in range(n_shadows)
    )
    poor = rng.random() < 0.25  # a poor acoustic window: patchy walls, more haze and clutter
    return Look(
        tissue_level=rng.uniform(0.28, 0.48),
        tissue_contrast=rng.uniform(0.1, 0.25),
        wall=rng.uniform(0.6, 0.9),
        wall_lateral_drop=rng.uniform(0, 0.7),
        wall_patchy=rng.uniform(0.25, 0.55) if poor else rng.uniform(0, 0.15),
        valve=rng.uniform(0.7, 1.3),
        blood=rng.uniform(0.03, 0.13),
        haze=rng.uniform(0.05, 0.2) if poor else rng.uniform(0, 0.06),
        clutter=rng.uniform(0.25, 0.55) if poor else rng.uniform(0.1, 0.4),
        clutter_depth=rng.uniform(0.05, 0.14),
        noise=rng.uniform(0, 0.05),
        gamma=float(np.exp(rng.uniform(-0.3, 0.25))),
        shadows=shadows,
        tgc=tuple(float(x) for x in rng.normal(0, 0.12, 3)),
    )


def _inside_fan(x, y, apex, radius, half_angle) -> bool:
    dx, dy = x - apex[0], y - apex[1]
    return math.hypot(dx, dy) < radius and abs(math.atan2(dx, dy)) < half_angle


def _plan_jet(rng, cls, valve, view, S, forced) -> JetPlan:
    if view == "PSAX" and cls == "AR":  # seen en face: a short, round blob inside the aortic root
        length = S * rng.uniform(0.03, 0.08)
        angle, w0, w1 = rng.uniform(0, 2 * math.pi), length * 0.45, length * rng.uniform(0.5, 0.8)
    else:
        length = S * (0.04 + 0.28 * rng.beta(1.1, 1.9))  # mostly small-to-medium, a few long ones
        angle = math.radians(valve.angle + rng.normal(0, 12))
        w0, w1 = S * rng.uniform(0.011, 0.022), length * rng.uniform(0.22, 0.5)
    if forced:
        length = max(length, 0.1 * S)
    eccentric = rng.random() < 0.35
    return JetPlan(
        cls,
        valve.name,
        angle,
        length,
        max(1.2, w0),
        max(2.0, w1),
        bend=rng.uniform(-0.35, 0.35) if eccentric else rng.uniform(-0.08, 0.08),
        vmax=rng.uniform(0.8, 1.9),
        turb=rng.uniform(0.3, 0.85),
        alpha=rng.uniform(0.75, 1.0) if forced else rng.uniform(0.5, 1.0),
        always=forced,
    )


# ---------------------------------------------------------------- primitives on (S, S) float32 maps
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(xx, yy) pixel-centre coordinates, each (S, S) float32."""
    r = np.arange(size, dtype=np.float32)
    return np.meshgrid(r, r)


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """(S, S) Gaussian-smoothed white noise rescaled to zero mean, unit std."""
    n = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), max(sigma, 0.3))
    return (n - n.mean()) / (n.std() + 1e-6)


def ellipse_field(xx, yy, cx, cy, ax, ay, angle_deg) -> np.ndarray:
    """Normalised squared elliptic radius: < 1 inside the rotated ellipse."""
    a = math.radians(angle_deg)
    dx, dy = xx - cx, yy - cy
    u = (dx * math.cos(a) + dy * math.sin(a)) / ax
    v = (-dx * math.sin(a) + dy * math.cos(a)) / ay
    return u * u + v * v


def plume_field(xx, yy, origin, angle, length, w0, w1, bend) -> tuple[np.ndarray, np.ndarray]:
    """Jet shape field (< 1 inside a widening, optionally curved plume) and axial position s/L in [0, 1].

    The plume starts as a disc of radius w0 at the orifice, widens to w1 and ends in a rounded cap.
    """
    ux, uy = math.cos(angle), math.sin(angle)
    dx, dy = xx - origin[0], yy - origin[1]
    s = dx * ux + dy * uy  # axial coordinate, px
    t = np.clip(s / length, 0, 1)
    q = (-dx * uy + dy * ux) - bend * length * t * t  # lateral distance to the curved centreline
    hw = w0 + (w1 - w0) * t**0.6
    cap = np.maximum(s - length, 0) / (0.8 * w1)
    f = np.where(s < 0, (q / w0) ** 2 + (s / w0) ** 2, (q / hw) ** 2 + cap * cap)
    return f.astype(np.float32), t.astype(np.float32)


def doppler_bgr(v: np.ndarray, var: np.ndarray | float = 0.0) -> np.ndarray:
    """BART colour map, (...,) velocity in [-1, 1] (+ = towards the probe) -> (..., 3) BGR float.

    Towards: dark red -> red -> yellow near the Nyquist limit; away: blue -> cyan; variance adds green.
    """
    a = np.abs(v)
    main = np.clip(0.25 + 1.1 * a, 0, 1)
    near_nyquist = np.clip((a - 0.55) / 0.45, 0, 1)
    towards = v >= 0
    g = np.clip(0.9 * near_nyquist + 0.85 * var, 0, 1)
    return np.stack([np.where(towards, 0, main), g, np.where(towards, main, 0)], -1).astype(np.float32)


def wrap(v: np.ndarray) -> np.ndarray:
    """Aliasing: velocities beyond the Nyquist limit (|v| > 1) wrap to the opposite colour."""
    return (v + 1) % 2 - 1


def blocky_noise(rng: np.random.Generator, size: int, block: float) -> np.ndarray:
    """(S, S) noise in [-1, 1] made of ~block-px tiles: the chunky texture of a turbulent mosaic."""
    n = max(2, int(round(size / block)))
    low = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_NEAREST)


def overlays(plan: VideoPlan, phase: float) -> np.ndarray:
    """(S, S, 3) uint8 canvas, black where empty: colour bar, depth ticks, text-like labels, ECG."""
    S = plan.size
    canvas = np.zeros((S, S, 3), np.uint8)
    x0, y0, w, h = int(0.03 * S), int(0.07 * S), max(2, int(0.025 * S)), int(0.22 * S)
    bar = doppler_bgr(np.linspace(1, -1, h, dtype=np.float32)[:, None].repeat(w, 1))
    canvas[y0 : y0 + h, x0 : x0 + w] = (bar * 255).astype(np.uint8)
    font, scale = cv2.FONT_HERSHEY_PLAIN, S / 420
    for i, text in enumerate(plan.texts):
        at = (x0, y0 - 2) if i == 0 else (int(0.78 * S), int((0.05 + 0.05 * i) * S))
        cv2.putText(canvas, text, at, font, scale, (200, 200, 200), 1, cv2.LINE_8)
    for k in range(1, 10):  # depth scale: dots every 10 % of the fan depth down the right edge
        y = int(plan.apex[1] + k * plan.radius / 10)
        if y < S - 1:
            canvas[y, S - 3 : S - 1] = 180
    if plan.ecg:
        xs = np.arange(int(0.05 * S), int(0.95 * S))
        t = (xs - xs[0]) / len(xs) * 2 * math.pi * 1.5
        beat = np.exp(-(((t % (2 * math.pi)) - 2.0) ** 2) / 0.01) - 0.3 * np.exp(
            -(((t % (2 * math.pi)) - 3.0) ** 2) / 0.2
        )
        ys = (0.955 * S - 0.035 * S * beat).astype(np.int32)
        cv2.polylines(canvas, [np.stack([xs, ys], 1).astype(np.int32)], False, (0, 190, 0), 1, cv2.LINE_8)
        mx = int(xs[0] + (phase % (2 * math.pi)) / (2 * math.pi) * len(xs) / 1.5)
        cv2.circle(canvas, (mx, int(0.955 * S)), max(1, S // 100), (0, 220, 255), -1, cv2.LINE_8)
    return canvas


def draw_valve(echo: np.ndarray, valve: Valve, opening: float, view: str, S: float, brightness: float = 1.2) -> None:
    """Bright leaflets on the B-mode map in place: closed = a line across the annulus (a Y for the aortic
    valve seen en face in PSAX), open = leaflets swung towards the forward flow (against the jet direction)."""
    thick = max(1, round(S / 110))
    c = np.array([valve.x, valve.y])
    a = math.radians(valve.angle)
    u, n = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    pt = lambda p: tuple(int(round(v)) for v in p)  # noqa: E731
    if view == "PSAX" and valve.name == "AV":
        spokes = [c + 0.8 * valve.radius * np.array([math.cos(b), math.sin(b)]) for b in (a, a + 2.094, a + 4.189)]
        if opening > 0.5:
            cv2.polylines(echo, [np.array([pt(p) for p in spokes], np.int32)], True, brightness, thick)
        else:
            for p in spokes:
                cv2.line(echo, pt(c), pt(p), brightness, thick)
        return
    for side in (-1, 1):
        hinge = c + side * valve.radius * n
        tip = hinge - u * valve.radius * 0.9 if opening > 0.5 else c + side * 0.1 * valve.radius * n
        cv2.line(echo, pt(hinge), pt(tip), brightness, thick)


def moved(ch: Chamber, systole: float) -> Chamber:
    """Chamber at a point of the cycle: ventricles shrink in systole while atria fill, vessels pulse."""
    k = {"ventricle": 1 - 0.08 * systole, "atrium": 0.97 + 0.06 * systole}.get(ch.kind, 1 + 0.02 * systole)
    return replace(ch, ax=ch.ax * k, ay=ch.ay * k)


# ---------------------------------------------------------------- the two layers of a frame
def fan_coords(plan: VideoPlan, xx, yy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside-fan bool mask, radius px, angle from the fan axis rad), each (S, S)."""
    dx, dy = xx - plan.apex[0], yy - plan.apex[1]
    r, theta = np.hypot(dx, dy), np.arctan2(dx, dy)
    return (r < plan.radius) & (np.abs(theta) < plan.half_angle) & (dy > 0), r, theta


def bmode(
    rng: np.random.Generator, plan: VideoPlan, chambers, systole: float, grid, fan
) -> tuple[np.ndarray, np.ndarray]:
    """Grey B-mode map (S, S) in [0, 1] and the blood-pool mask (S, S) bool.

    Echogenicity: textured tissue, bright chamber walls (fading where they run parallel to the beam and,
    with a poor acoustic window, in patches), echo-free blood with reverberation haze, valve leaflets; then
    multiplicative Rayleigh speckle, depth attenuation with a per-video gain curve, near-field clutter,
    rib shadows, dim fan edges, electronic noise, gain and gamma (all strengths from ``plan.look``).
    """
    xx, yy = grid
    inside, r, theta = fan
    S = plan.size
    look = plan.look or Look()
    echo = np.clip(look.tissue_level + look.tissue_contrast * plan.tissue, 0.03, 0.9)
    wobble = 0.12 * plan.tissue  # irregular, not perfectly elliptical, chamber outlines
    fields = [ellipse_field(xx, yy, c.cx, c.cy, c.ax, c.ay, c.angle) + wobble for c in chambers]
    # walls: dimmer where the wall runs along the beam (its normal across it) and in poor-window patches
    patch = np.clip(1 - look.wall_patchy * 2.2 * np.clip(plan.tissue[::-1].T + 0.6, 0, None) / 1.6, 0, 1)
    for c in chambers:  # walls first so neighbouring pools leave a septum between them
        t = S * (0.035 if c.kind == "ventricle" else 0.018)
        wall = ellipse_field(xx, yy, c.cx, c.cy, c.ax + t, c.ay + t, c.angle) + wobble < 1
        nx, ny = xx[wall] - c.cx, yy[wall] - c.cy  # rough wall normal: away from the chamber centre
        bx, by = xx[wall] - plan.apex[0], yy[wall] - plan.apex[1]  # beam direction
        along = np.abs(nx * bx + ny * by) / (np.hypot(nx, ny) * np.hypot(bx, by) + 1e-6)  # 1: wall faces the beam
        strength = (1 - look.wall_lateral_drop * (1 - along) ** 2) * patch[wall]
        bright = look.wall + 0.12 * plan.tissue[wall]
        echo[wall] = np.maximum(echo[wall], echo[wall] + strength * (bright - echo[wall]))
    blood = np.zeros((S, S), bool)
    for f in fields:
        blood |= f < 1
    haze = look.haze * np.clip(smooth_noise(rng, S, 0.05 * S) + 0.3, 0, None)
    echo[blood] = look.blood * (1 + 0.5 * smooth_noise(rng, S, 2.0)[blood]) + haze[blood]  # faint echoes + haze
    for v in plan.valves.values():
        opening = systole if v.opens == "systole" else 1 - systole
        draw_valve(echo, v, opening, plan.view, S, look.valve)
    speckle = rng.rayleigh(1.0, (S, S)).astype(np.float32) / math.sqrt(math.pi / 2)  # mean 1
    speckle = cv2.GaussianBlur(speckle, (0, 0), sigmaX=0.9 * S / 160, sigmaY=0.45 * S / 160)
    depth = r / plan.radius
    tgc = 1 + sum(a * np.cos((k + 1) * math.pi * depth) for k, a in enumerate(look.tgc))
    clutter = look.clutter * np.exp(-depth / look.clutter_depth) * (1 + 0.5 * smooth_noise(rng, S, 1.5))
    edge = np.clip((plan.half_angle - np.abs(theta)) / 0.12, 0, 1)
    shade = np.ones((S, S), np.float32)
    for centre, width, strength in look.shadows:  # rib shadows: dark wedges from some depth downwards
        wedge = np.clip(1 - np.abs(theta - centre) / width, 0, 1) ** 0.5 * np.clip((depth - 0.15) / 0.1, 0, 1)
        shade *= 1 - strength * wedge
    grey = echo * speckle * np.exp(-plan.atten * depth) * np.clip(tgc, 0.4, 1.6) * shade + clutter
    grey = plan.gain * grey * (0.45 + 0.55 * edge) + look.noise * np.abs(rng.standard_normal((S, S)))
    grey = np.clip(grey, 0, 1) ** (look.gamma * rng.uniform(0.92, 1.08))
    return (grey * inside).astype(np.float32), blood & inside


def laminar_blobs(
    rng: np.random.Generator, plan: VideoPlan, chambers, region, grid
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Unlabelled normal-flow distractors: [(mask (S, S) bool, BGR colour (S, S, 3))], smooth red or blue,
    inside a chamber or (a third of them) right over a valve."""
    xx, yy = grid
    S = plan.size
    blobs = []
    for _ in range(min(3, rng.poisson(plan.distractors))):
        if rng.random() < 0.35:
            v = list(plan.valves.values())[rng.integers(len(plan.valves))]
            cx, cy = v.x + rng.normal(0, v.radius), v.y + rng.normal(0, v.radius)
        else:
            c = chambers[rng.integers(len(chambers))]
            cx, cy = c.cx + rng.uniform(-0.5, 0.5) * c.ax, c.cy + rng.uniform(-0.5, 0.5) * c.ay
        ax = S * rng.uniform(0.04, 0.12)
        f = ellipse_field(xx, yy, cx, cy, ax, ax * rng.uniform(0.35, 0.8), rng.uniform(0, 180))
        f = f + 0.25 * smooth_noise(rng, S, 0.03 * S)
        mask = (f < 1) & region
        peak = rng.uniform(0.9, 1.3) if rng.random() < 0.25 else rng.uniform(0.25, 0.6)  # fast ones alias
        speed = peak * np.clip(1.25 - f, 0.3, 1) + 0.03 * rng.standard_normal((S, S))
        colour = doppler_bgr(wrap(rng.choice((-1, 1)) * speed).astype(np.float32))  # smooth bands, no mosaic
        blobs.append((mask, colour))
    return blobs


def jet_layer(
    rng: np.random.Generator, plan: VideoPlan, jet: JetPlan, weight: float, region, grid
) -> tuple[np.ndarray, np.ndarray]:
    """A turbulent jet at this frame: (mask (S, S) bool, BGR colour (S, S, 3)).

    ``weight`` in [0, 1] is how deep the frame is in the jet's phase (systole for MR/TR) and scales it.
    Velocity = aliasing core along the axis + blocky turbulence, wrapped at the Nyquist limit, with a
    variance (green) tag: the red/blue/yellow/cyan mosaic of regurgitation.
    """
    S = plan.size
    valve = plan.valves[jet.valve]
    size = (0.65 + 0.45 * weight) * rng.uniform(0.9, 1.1)
    f, t = plume_field(
        *grid, (valve.x, valve.y), jet.angle + rng.normal(0, 0.06), jet.length * size, jet.w0, jet.w1 * size, jet.bend
    )
    f = f + 0.35 * smooth_noise(rng, S, 0.025 * S)
    orifice = ellipse_field(*grid, valve.x, valve.y, 0.04 * S, 0.04 * S, 0) < 1
    mask = (f < 1) & (region | orifice) & fan_coords(plan, *grid)[0]
    n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n > 2:  # clipped into pieces by a septum: keep what is connected to the orifice (or the largest piece)
        at_orifice = np.unique(comp[mask & orifice])
        keep = at_orifice if len(at_orifice) else [np.argmax(np.bincount(comp[mask]))]
        mask = np.isin(comp, keep) & mask
    # Flow towards the probe is positive: the sign of the axis' radial component decides red vs blue.
    away = math.cos(jet.angle) * (valve.x - plan.apex[0]) + math.sin(jet.angle) * (valve.y - plan.apex[1])
    towards = -1.0 if away > 0 else 1.0
    # Fast core at the orifice and on the axis, slowing towards the tip and edges; turbulence fades too.
    core = towards * jet.vmax * (1 - 0.7 * t) * (1 - 0.4 * np.clip(f, 0, 1))
    chaos = jet.turb * (1 - 0.5 * t)
    v = wrap(core + chaos * (0.7 * blocky_noise(rng, S, rng.uniform(1.5, 3.0)) + 0.3 * smooth_noise(rng, S, 1.0)))
    var = np.clip(chaos * np.abs(blocky_noise(rng, S, 2.0)) - 0.2, 0, 1)
    return mask, doppler_bgr(v, var) * plan.colour_gain
