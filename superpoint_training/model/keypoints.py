"""Post-processing of SuperPoint's head outputs into keypoints and descriptors, batched on the device.

Every step here runs on the tensors' device without host round trips: softmax over the 65 bins,
depth-to-space, max-pool NMS (two suppression passes, as in SuperGlue's and rpautrat's PyTorch
code), border removal, threshold, batched top-k and bilinear descriptor sampling. The only host
synchronisation on a GPU is the keypoint count when the number of keypoints is not fixed; on the
CPU, where counting costs nothing, the top-k and a pyramid's descriptors look at the points that
count only (``test/test_postprocessing_paths.py`` holds them to the plain formulations).

The reference's box NMS (:func:`box_nms`, ``DetectionConfig.nms_box``) is there for its evaluation
protocol; it also runs on the device, with one host synchronisation per suppression round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import STRIDE

DESCRIPTOR_SAMPLING = ("cell", "legacy")
SUBPIXEL = ("none", "quadratic", "gaussian", "learned", "corner")


def no_limit(value: int | None) -> int | None:
    """The one rule for counts and sizes: None, -1 (any negative) or 0 mean "no limit" (None)."""
    if value is None or int(value) <= 0:
        return None
    return int(value)


@dataclass
class DetectionConfig:
    """Options of keypoint selection; the names are the Extractor's and the node's parameters.

    ``max_keypoints`` None, -1 or 0 (:func:`no_limit`) keeps every point above the threshold.
    ``descriptor_sampling``: ``"cell"`` samples at ((x + 0.5) / (8 Wc)) * 2 - 1 with
    align_corners=False (rpautrat's v6 code); ``"legacy"`` uses SuperGlue's
    (x - 4 + 0.5) / (8 Wc - 4 - 0.5) * 2 - 1 with align_corners=True (Magic Leap's v1 weights).
    ``subpixel``: ``"none"`` keeps the integer pixel of each score maximum (the publishers' code);
    ``"quadratic"`` and ``"gaussian"`` move it within +-0.5 px to the vertex of a parabola through
    the score map around it, or through its logarithm (:func:`refine_keypoints`); descriptors are
    then sampled at the refined positions; ``"learned"`` runs the weights' trained refinement
    (:class:`~superpoint_training.model.refinement.SubpixelRefinement`, held in the attribute
    ``refinement``, not a field: the Extractor sets it from weights that carry one); ``"corner"``
    starts from the Gaussian fit and moves each point to where the image's edge lines meet in a 7x7
    window of the input image (:func:`~superpoint_training.model.corner_refinement.refine_corners`;
    any weights), a step that :class:`~superpoint_training.model.inference.SuperPointPipeline` takes
    on the whole image after the pyramid's levels merge (descriptors stay sampled at the Gaussian fit).
    ``nms_box``: 0 (default) suppresses with the max-pool of ``nms_radius``; > 0 uses instead the
    reference's box NMS (:func:`box_nms`) with boxes of that side and IoU threshold ``nms_iou``, on
    the points at or above ``detection_threshold`` (the reference's evaluation: 4 for detectors, 8
    for descriptors). Slower than the max-pool; for evaluation, not for the robot.
    ``scales``: the image sizes, as fractions of the input, that the network sees; with more than
    one, the keypoints of every level come back in the input's pixels, each level's scores are
    multiplied by its scale, and the strongest ``max_keypoints`` of all levels are kept
    (:func:`merge_levels`, :meth:`SuperPointPipeline.forward
    <superpoint_training.model.inference.SuperPointPipeline.forward>`). The network is not scale
    invariant; a pyramid lets two views whose scales differ by 2x meet at some pair of levels, at
    1 + 1/2 + 1/4 ... times the cost.
    """

    detection_threshold: float = 0.005
    nms_radius: int = 4
    remove_borders: int = 4
    max_keypoints: int | None = None
    fixed_keypoints: bool = False
    descriptor_sampling: str = "cell"
    subpixel: str = "none"
    scales: tuple[float, ...] = (1.0,)
    nms_box: int = 0
    nms_iou: float = 0.1
    # not a field (no annotation): asdict() and the JSON records of the options leave it out
    refinement = None  # the SubpixelRefinement of subpixel="learned", set by the Extractor

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= float(self.detection_threshold) < 1.0:
            raise ValueError(f"detection_threshold must be in [0, 1), got {self.detection_threshold}")
        if int(self.nms_radius) < 0:
            raise ValueError(f"nms_radius must be >= 0, got {self.nms_radius}")
        if int(self.nms_box) < 0:
            raise ValueError(f"nms_box must be >= 0 (0: max-pool NMS), got {self.nms_box}")
        if not 0.0 <= float(self.nms_iou) < 1.0:
            raise ValueError(f"nms_iou must be in [0, 1), got {self.nms_iou}")
        if int(self.remove_borders) < 0:
            raise ValueError(f"remove_borders must be >= 0, got {self.remove_borders}")
        self.max_keypoints = no_limit(self.max_keypoints)
        if self.fixed_keypoints and self.max_keypoints is None:
            raise ValueError("fixed_keypoints=True needs a positive max_keypoints (the fixed K)")
        if self.descriptor_sampling not in DESCRIPTOR_SAMPLING:
            raise ValueError(
                f"descriptor_sampling must be one of {DESCRIPTOR_SAMPLING}, got {self.descriptor_sampling!r}"
            )
        if self.subpixel not in SUBPIXEL:
            raise ValueError(f"subpixel must be one of {SUBPIXEL}, got {self.subpixel!r}")
        self.scales = parse_scales(self.scales)


def parse_scales(scales) -> tuple[float, ...]:
    """``scales`` as a tuple of distinct floats in (0, 1], largest first; "1,0.5" and 0.5 are accepted."""
    if isinstance(scales, str):
        scales = [part for part in scales.replace(" ", "").split(",") if part]
    elif isinstance(scales, (int, float)):
        scales = [scales]
    try:
        values = sorted({float(value) for value in scales}, reverse=True)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be numbers in (0, 1], e.g. 1,0.5, got {scales!r}") from None
    if not values or not all(0.0 < value <= 1.0 for value in values):
        raise ValueError(f"scales must be one or more numbers in (0, 1], e.g. 1,0.5, got {scales!r}")
    return tuple(values)


def logits_to_scores(logits: torch.Tensor) -> torch.Tensor:
    """(B, 65, Hc, Wc) logits to (B, 8 Hc, 8 Wc) float32 probabilities (softmax, drop dustbin, depth-to-space)."""
    probs = torch.softmax(logits.float(), dim=1)[:, :-1]
    return F.pixel_shuffle(probs, STRIDE)[:, 0]


def _window_max_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Max over a window of 2r+1 along ``dim`` (padding -inf, or False for a bool mask, where the
    maximum is a logical or), by doubling: log2(k) elementwise maxima.

    On the CPU this is about ten times faster than ``max_pool2d`` with a stride-1 window.
    """
    k = 2 * radius + 1
    mask = x.dtype == torch.bool
    larger = torch.logical_or if mask else torch.maximum  # ONNX's Max takes no bool
    pad = [0, 0] * (x.ndim - 1 - dim % x.ndim) + [radius, radius]
    m = F.pad(x, pad, value=False if mask else float("-inf"))
    n = m.shape[dim]
    width = 1
    while width * 2 <= k:
        m = larger(m.narrow(dim, 0, n - width), m.narrow(dim, width, n - width))
        n = n - width
        width *= 2
    if width < k:
        m = larger(m.narrow(dim, 0, n - (k - width)), m.narrow(dim, k - width, n - (k - width)))
    return m


def _max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(2r+1)^2 max filter of (B, 1, H, W) with -inf padding (a bool mask: its dilation);
    separable (rows, then columns)."""
    if x.device.type == "cpu":
        return _window_max_1d(_window_max_1d(x, radius, -1), radius, -2)
    if x.dtype == torch.bool:  # max_pool2d takes floats
        return _max_pool(x.to(torch.float32), radius) > 0
    k = 2 * radius + 1
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))


def nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Max-pool non-maximum suppression of (B, H, W) scores; suppressed pixels become 0.

    A pixel survives if it is the maximum of its (2r+1)^2 window; two further passes recover maxima
    that were only suppressed by a suppressed neighbour (the definition used by SuperGlue and the
    v6 port). The masks are dilated as bool maps (a quarter of a float map's memory traffic).
    """
    if radius == 0:
        return scores
    x = scores[:, None]
    zeros = torch.zeros_like(x)
    max_mask = x == _max_pool(x, radius)
    for _ in range(2):
        supp_mask = _max_pool(max_mask, radius)
        supp_scores = torch.where(supp_mask, zeros, x)
        new_max_mask = supp_scores == _max_pool(supp_scores, radius)
        max_mask = max_mask | (new_max_mask & ~supp_mask)
    return torch.where(max_mask, x, zeros)[:, 0]


def box_overlap_offsets(size: int, iou: float) -> list[tuple[int, int]]:
    """The pixel offsets (dx, dy) != (0, 0) at which two boxes of side ``size`` centred on pixels
    overlap with IoU > ``iou``: (s-|dx|)(s-|dy|) / (2 s^2 - (s-|dx|)(s-|dy|)) > iou."""
    offsets = []
    for dy in range(-size + 1, size):
        for dx in range(-size + 1, size):
            inter = (size - abs(dx)) * (size - abs(dy))
            if (dx or dy) and inter / (2 * size * size - inter) > iou:
                offsets.append((dx, dy))
    return offsets


def box_nms(scores: torch.Tensor, size: int, iou: float = 0.1, threshold: float = 0.0) -> torch.Tensor:
    """The reference's box NMS of (B, H, W) scores (rpautrat/SuperPoint ``box_nms``); suppressed and
    below-threshold pixels become 0.

    Every pixel with score >= ``threshold`` is a box of side ``size`` centred on it; greedily, in
    order of decreasing score (ties: the earlier pixel in row-major order first), a box is kept unless
    a kept box overlaps it with IoU > ``iou`` (TensorFlow's ``non_max_suppression``). Boxes only
    overlap at the few offsets of :func:`box_overlap_offsets`, so the greedy result is computed in
    parallel: a candidate is kept once every stronger overlapping candidate is suppressed, and
    suppressed as soon as one of them is kept; each round settles at least the strongest
    undecided candidate of every group, on the rows still undecided of a (candidates x offsets)
    neighbour table on the device (about 10 rounds on real score maps).
    """
    b, h, w = scores.shape
    offsets = box_overlap_offsets(int(size), float(iou))
    candidate = scores >= threshold
    if not offsets or not bool(candidate.any()):
        return torch.where(candidate, scores, torch.zeros_like(scores))
    r = max(max(abs(dx), abs(dy)) for dx, dy in offsets)
    where = candidate.nonzero()  # (N, 3) b, y, x in row-major order: the tie order
    n = where.shape[0]
    # int32 indices halve the (N, K) table (an untrained network puts every pixel above 0.001)
    index_type = torch.int32 if n < 2**31 - 1 else torch.long
    index_map = torch.full((b, h + 2 * r, w + 2 * r), n, dtype=index_type, device=scores.device)  # n: none
    own = torch.arange(n, dtype=index_type, device=scores.device)
    index_map[where[:, 0], where[:, 1] + r, where[:, 2] + r] = own
    delta = torch.tensor(offsets, dtype=torch.long, device=scores.device)  # (K, 2) dx, dy
    neighbours = index_map[where[:, None, 0], where[:, None, 1] + r + delta[:, 1], where[:, None, 2] + r + delta[:, 0]]
    values = scores[where[:, 0], where[:, 1], where[:, 2]]
    neighbour_values = torch.cat((values, values.new_full((1,), float("-inf"))))[neighbours]
    # stronger[i, k]: neighbour k of candidate i comes first in the greedy order
    stronger = (neighbour_values > values[:, None]) | ((neighbour_values == values[:, None]) & (neighbours < own[:, None]))
    del neighbour_values
    neighbours = torch.where(stronger, neighbours, n)  # keep only the stronger ones; n is never kept
    undecided = torch.ones(n + 1, dtype=torch.bool, device=scores.device)
    kept = torch.zeros(n + 1, dtype=torch.bool, device=scores.device)
    undecided[n] = False
    active = torch.arange(n, device=scores.device)  # the rows still undecided
    while active.numel():
        table = neighbours[active]
        free = ~kept[table].any(1) & ~undecided[table].any(1)  # every stronger neighbour suppressed
        kept[active[free]] = True
        undecided[active[free]] = False
        beaten = kept[table].any(1)  # a stronger neighbour is kept, now or before
        undecided[active[beaten]] = False
        active = active[~free & ~beaten]
    out = torch.zeros_like(scores)
    keep = kept[:n]
    out[where[keep, 0], where[keep, 1], where[keep, 2]] = values[keep]
    return out


def remove_border_scores(scores: torch.Tensor, border: int) -> torch.Tensor:
    """Zero the scores within ``border`` pixels of the edges (in place; returns ``scores``)."""
    if border > 0:
        scores[:, :border] = 0
        scores[:, -border:] = 0
        scores[:, :, :border] = 0
        scores[:, :, -border:] = 0
    return scores


def top_k_keypoints(
    scores: torch.Tensor, threshold: float, k: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched top-k of (B, H, W) scores.

    Returns keypoints (B, K, 2) as float (x, y), their scores (B, K) in descending order and a
    validity mask (B, K) (score above threshold). Valid entries always form a prefix. With
    ``k`` None, K is the largest count above threshold in the batch (one host synchronisation).
    """
    b, h, w = scores.shape
    flat = scores.reshape(b, h * w)
    if k is None:
        k = int((flat > threshold).sum(1).max()) if flat.numel() else 0
    k = min(k, h * w)
    values, indices = _top_k_of_positive(flat, k) or flat.topk(k, dim=1, sorted=True)
    keypoints = torch.stack((indices % w, torch.div(indices, w, rounding_mode="floor")), dim=-1)
    return keypoints.to(scores.dtype), values, values > threshold


def _data_dependent_shapes_are_cheap(tensor: torch.Tensor) -> bool:
    """Whether post-processing may pick entries by their values (``nonzero``, shapes that depend on
    the data): on the CPU, where that costs no host synchronisation, and outside a traced graph,
    whose shapes must not depend on the data."""
    return tensor.device.type == "cpu" and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _top_k_of_positive(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``flat.topk(k)`` of (B, N) scores after NMS, taken over their positive entries only, or None
    where that is not the same: fewer than k positive in a row, or a traced graph (whose shapes
    must not depend on the data). NMS leaves a few percent of the pixels positive, and a top-k of
    those is several times cheaper than one of the whole map. The same values and points; equal
    scores (frequent with a bf16 network) may come in another order, as between any two top-k
    implementations. On the CPU only, where counting them costs no host synchronisation."""
    if k == 0 or not _data_dependent_shapes_are_cheap(flat):
        return None
    positive = flat > 0
    if not bool((positive.sum(1) >= k).all()):
        return None
    rows = []
    for row, mask in zip(flat, positive, strict=True):
        where = mask.nonzero()[:, 0]
        values, order = row[where].topk(k, sorted=True)
        rows.append((values, where[order]))
    return torch.stack([v for v, _ in rows]), torch.stack([i for _, i in rows])


def refine_keypoints(scores: torch.Tensor, keypoints: torch.Tensor, mode: str) -> torch.Tensor:
    """Sub-pixel positions of integer keypoints (B, K, 2) from the (B, H, W) score map before NMS.

    The network scores every pixel, so a maximum's neighbours say on which side of the pixel
    centre the corner lies; the integer maximum alone costs up to 0.5 px per axis, which homography
    estimation at e=1..3 px feels. On each axis a parabola goes through the maximum and its two
    neighbours, on the scores (``"quadratic"``) or on their logarithm (``"gaussian"``: exact for a
    Gaussian peak, and the scores are peaked softmax outputs); its vertex, clamped to +-0.5 px so
    that a point never leaves its pixel, is the new position. A few gathers on the scores' device,
    no loop over keypoints. Measured on the held-out photos (superpoint_ros, 2026-11-29), the
    localisation error under viewpoint changes: none 1.45 px, quadratic 1.37, gaussian 1.34.
    """
    if mode == "none" or keypoints.shape[1] == 0:
        return keypoints
    b, h, w = scores.shape
    padded = F.pad(scores, (1, 1, 1, 1), mode="reflect").reshape(b, -1)  # at an edge: no shift
    x = keypoints[..., 0].long().clamp(0, w - 1) + 1
    y = keypoints[..., 1].long().clamp(0, h - 1) + 1
    # the pixel and its 4 neighbours (centre, left, right, up, down) in the padded flat map
    centre = y * (w + 2) + x
    row = w + 2
    index = torch.stack((centre, centre - 1, centre + 1, centre - row, centre + row), dim=-1).reshape(b, -1)
    c, left, right, up, down = padded.gather(1, index).reshape(*centre.shape, 5).unbind(-1)
    if mode == "gaussian":  # scores are probabilities >= 0: a floor keeps log finite
        c, left, right, up, down = (v.clamp(min=1e-12).log() for v in (c, left, right, up, down))
    curvature_x = left - 2 * c + right
    curvature_y = up - 2 * c + down
    dx = torch.where(curvature_x < 0, 0.5 * (left - right) / curvature_x.clamp(max=-1e-12), 0)
    dy = torch.where(curvature_y < 0, 0.5 * (up - down) / curvature_y.clamp(max=-1e-12), 0)
    delta = torch.stack((dx, dy), dim=-1).clamp(-0.5, 0.5)
    return keypoints + delta.to(keypoints.dtype)


def sample_descriptors(dense: torch.Tensor, keypoints: torch.Tensor, mode: str = "cell") -> torch.Tensor:
    """Bilinearly sample L2-normalised dense descriptors (B, D, Hc, Wc) at keypoints (B, K, 2).

    Returns (B, K, D) L2-normalised descriptors. See :class:`DetectionConfig` for the two modes.
    The training losses sample with it; inference reads raw maps with
    :func:`sample_normalised_descriptors`, which gives the same without normalising the whole map.
    """
    b, d, hc, wc = dense.shape
    if mode == "cell":
        size = keypoints.new_tensor([wc * STRIDE, hc * STRIDE])
        grid = (keypoints + 0.5) / size * 2 - 1
        align_corners = False
    else:
        half = STRIDE / 2
        size = keypoints.new_tensor([wc * STRIDE - half - 0.5, hc * STRIDE - half - 0.5])
        grid = (keypoints - half + 0.5) / size * 2 - 1
        align_corners = True
    sampled = F.grid_sample(dense, grid[:, None].to(dense.dtype), mode="bilinear", align_corners=align_corners)
    return F.normalize(sampled[:, :, 0].transpose(1, 2), p=2, dim=-1)


CELL_CORNERS = ((0, 0), (1, 0), (0, 1), (1, 1))  # (dx, dy) of the four cells around a sampling point


def sample_normalised_descriptors(dense: torch.Tensor, keypoints: torch.Tensor, mode: str = "cell") -> torch.Tensor:
    """What :func:`sample_descriptors` returns on the L2-normalised map ``F.normalize(dense, dim=1)``
    (equal to float rounding), without normalising the map: at each keypoint the four cells around
    it (zero outside the map, as ``grid_sample`` pads), each normalised, blended with the bilinear
    weights. A keypoint reads four of the map's cells, and normalising the whole map first was
    the larger part of the descriptors' post-processing. ``dense``: raw (B, D, Hc, Wc) descriptors."""
    b, d, hc, wc = dense.shape
    k = keypoints.shape[1]
    keypoints = keypoints.float()
    if mode == "cell":  # the positions in cells that sample_descriptors' grid addresses
        position = (keypoints + 0.5) / STRIDE - 0.5
    else:
        half = STRIDE / 2
        size = keypoints.new_tensor([wc * STRIDE - half - 0.5, hc * STRIDE - half - 0.5])
        position = (keypoints - half + 0.5) / size * keypoints.new_tensor([wc - 1, hc - 1])
    base = position.floor()
    fraction = (position - base)[..., None, :]  # (B, K, 1, 2)
    offsets = torch.tensor(CELL_CORNERS, device=dense.device)
    corner = base.long()[..., None, :] + offsets  # (B, K, 4, 2)
    inside = ((corner >= 0) & (corner < torch.tensor([wc, hc], device=dense.device))).all(-1)
    weights = torch.where(inside, torch.where(offsets.bool(), fraction, 1 - fraction).prod(-1), 0)
    cell = corner[..., 1].clamp(0, hc - 1) * wc + corner[..., 0].clamp(0, wc - 1)  # (B, K, 4)
    cell = cell + torch.arange(b, device=dense.device).view(b, 1, 1) * (hc * wc)
    table = dense.permute(0, 2, 3, 1).reshape(b * hc * wc, d)  # one row per cell
    rows = table.index_select(0, cell.reshape(-1)).float().view(b, k, 4, d)
    blend = weights / torch.linalg.vector_norm(rows, dim=-1).clamp_min(1e-12)  # F.normalize's floor
    return F.normalize((blend[..., None, :] @ rows)[..., 0, :], p=2, dim=-1)


def sample_level_descriptors(dense_maps: list[torch.Tensor], keypoints: torch.Tensor, level: torch.Tensor,
                             mode: str = "cell") -> torch.Tensor:
    """Descriptors (B, K, D) of keypoints that come from several pyramid levels: entry (b, k) from
    the raw dense map ``dense_maps[level[b, k]]`` at ``keypoints[b, k]`` (that level's pixels), as
    :func:`sample_normalised_descriptors` samples it. On the CPU each entry is sampled once, from
    its own level; a GPU (where picking the entries of a level costs a host synchronisation) and a
    traced graph (no shapes that depend on the data) sample every entry at every level and pick."""
    b, k = level.shape
    descriptors = keypoints.new_zeros((b, k, dense_maps[0].shape[1]), dtype=torch.float32)
    pick = not _data_dependent_shapes_are_cheap(keypoints)
    for index, dense in enumerate(dense_maps):
        chosen = level == index
        if pick:
            sampled = sample_normalised_descriptors(dense, keypoints, mode)
            descriptors = torch.where(chosen[..., None], sampled, descriptors)
            continue
        for row in range(b):
            where = chosen[row].nonzero()[:, 0]
            if where.numel():
                sampled = sample_normalised_descriptors(dense[row:row + 1], keypoints[row:row + 1, where], mode)
                descriptors[row].index_copy_(0, where, sampled[0])
    return descriptors


def detect(
    logits: torch.Tensor, dense_descriptors: torch.Tensor | None, config: DetectionConfig,
    image: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Head outputs to batched keypoints: dict of keypoints (B, K, 2), scores (B, K), valid (B, K),
    descriptors (B, K, D) (D = 0 for a detector-only model). ``image``: the network's (B, 1, H, W)
    input, for a learned refinement that reads it.

    The score map is the (8 Hc, 8 Wc) depth-to-space of the logits, as in the publishers' code;
    border removal counts from its edges. Whole images in, pipeline and all:
    :class:`superpoint_training.model.inference.SuperPointPipeline`.
    """
    dense_scores = logits_to_scores(logits)
    if config.nms_box:
        suppressed = box_nms(dense_scores, config.nms_box, config.nms_iou, config.detection_threshold)
    else:
        suppressed = nms(dense_scores, config.nms_radius)
    scores = remove_border_scores(suppressed, config.remove_borders)
    k = config.max_keypoints
    keypoints, values, valid = top_k_keypoints(scores, config.detection_threshold, k)
    if config.subpixel == "learned":
        if config.refinement is None:
            raise ValueError("subpixel='learned' needs weights that carry a trained refinement")
        keypoints = config.refinement(dense_scores, keypoints, image)
    else:  # "corner" starts from the Gaussian fit; its image step follows after the levels merge
        mode = "gaussian" if config.subpixel == "corner" else config.subpixel
        keypoints = refine_keypoints(dense_scores, keypoints, mode)
    if config.fixed_keypoints and keypoints.shape[1] < k:  # tiny image: pad to the fixed K
        pad = k - keypoints.shape[1]
        keypoints = F.pad(keypoints, (0, 0, 0, pad))
        values = F.pad(values, (0, pad))
        valid = F.pad(valid, (0, pad))
    if dense_descriptors is not None:
        descriptors = sample_normalised_descriptors(dense_descriptors, keypoints, config.descriptor_sampling)
    else:
        descriptors = keypoints.new_zeros((*keypoints.shape[:2], 0))
    return {"keypoints": keypoints, "scores": values, "valid": valid, "descriptors": descriptors}


def merge_levels(levels: list[dict[str, torch.Tensor]], k: int | None,
                 weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The outputs of :func:`detect` on several pyramid levels (keypoints already in the same
    pixels) as one: the strongest valid ``k`` over all levels (all valid ones for None), sorted by
    score, valid entries a prefix as in :func:`detect`. One ``topk``, on the device.

    ``weights`` multiply each level's scores before the ranking (and in the output): the pipeline
    passes each level's scale, so that a coarse point, localised that many times more coarsely,
    outranks a fine one only when it is that much stronger. Measured on the held-out photos
    (scales 1, 0.71, 0.5; homography correct at e=3 over 5 orders): strong warps 0.753 unweighted ->
    0.770 weighted, mild warps 0.847 -> 0.863 (one scale: 0.727 and 0.858).
    A corner seen at two levels stays twice, with the descriptor of each level: suppressing the
    weaker of two points of different levels within the NMS radius measured worse on the strong
    warps (0.753 -> 0.729).
    """
    if weights is not None:
        levels = [{**level, "scores": level["scores"] * w} for level, w in zip(levels, weights, strict=True)]
    merged = {key: torch.cat([level[key] for level in levels], dim=1) for key in levels[0]}
    valid = merged["valid"]
    if k is None:
        k = int(valid.sum(1).max()) if valid.numel() else 0
    k = min(k, valid.shape[1])
    rank = torch.where(valid, merged["scores"], merged["scores"].new_tensor(-1.0))
    order = rank.topk(k, dim=1, sorted=True).indices
    return {key: value.gather(1, order.view(*order.shape, *[1] * (value.ndim - 2)).expand(-1, -1, *value.shape[2:]))
            for key, value in merged.items()}
