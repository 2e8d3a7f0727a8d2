"""`kmeans`: colour clustering (k-means in Lab) at reduced resolution, warm-started frame to frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from seg_video.core.types import ClassTable, Frame, Segmentation
from seg_video.engines.classical._common import FrameEngine, RegionMapParams, at_least, between
from seg_video.engines.classical._regions import components, segmentation, shrink

Pixels = npt.NDArray[np.float32]
"""Lab colours of the shrunk frame, h x w x 3 float32."""


@dataclass
class KMeansParams(RegionMapParams):
    """Number of colour clusters, working resolution, and the k-means effort."""

    k: int = 4
    scale: float = 0.25
    """Cluster a copy of the frame resized by this factor; labels are upscaled (nearest) to frame size."""
    split_components: bool = False
    """One instance per connected region of each cluster instead of one per cluster."""
    attempts: int = 3
    """k-means++ restarts on the first frame (later frames start from the previous centres)."""
    iterations: int = 10
    """At most this many k-means iterations per frame."""
    epsilon: float = 0.5
    """Stop once no centre moves more than this (Lab units)."""

    def validate(self) -> None:
        """Check k, the scale and the effort settings."""
        super().validate()
        between("k", self.k, 2, 32)
        between("scale", self.scale, 0.01, 1.0)
        between("attempts", self.attempts, 1, 100)
        between("iterations", self.iterations, 1, 1000)
        at_least("epsilon", self.epsilon, 0)


class KMeansEngine(FrameEngine):
    """Lab colour clusters; score: separation, 1 - (mean distance of a cluster's pixels to its centre) / (half the
    distance to the nearest other centre), clipped to 0..1 (1: a flat colour well apart from the others)."""

    name = "kmeans"
    summary = "colour clustering (k-means in Lab) at reduced resolution, one instance per cluster"
    Params = KMeansParams

    def __init__(self, params: KMeansParams) -> None:
        self.params = params
        self._classes = ClassTable(tuple(f"cluster {i}" for i in range(params.k)))
        self._centres: Pixels | None = None

    def reset(self) -> None:
        """Forget the previous frame's centres: the next frame is clustered from scratch (k-means++)."""
        self._centres = None

    @property
    def classes(self) -> ClassTable:
        """("cluster 0", ..., "cluster k-1"), in the order of the first clustered frame's centres by L, a, b."""
        return self._classes

    def prepare(self, frame: Frame) -> Pixels:
        """The frame shrunk and converted to Lab (stateless, so it runs ahead in the preprocess thread)."""
        return cv2.cvtColor(shrink(frame.image, self.params.scale), cv2.COLOR_BGR2Lab).astype(np.float32)

    def segment(self, frame: Frame, prepared: Pixels) -> Segmentation:
        """Cluster the colours, then one instance per cluster (or per connected region of one)."""
        params = self.params
        pixels = prepared.reshape(-1, 3)
        if len(pixels) < params.k or not (pixels != pixels[0]).any():  # nothing to tell apart
            return Segmentation.empty(*frame.size, self._classes)
        clusters, centres = self._cluster(pixels)
        cluster_map = clusters.reshape(prepared.shape[:2])
        if params.split_components:
            labels, level_of = components(cluster_map, range(params.k))
        else:  # region j + 1 is cluster j; region 0 (none) is never an instance
            labels, level_of = cluster_map + 1, np.concatenate(([0], np.arange(params.k)))
        scores = separation(pixels, clusters, centres)
        return segmentation(labels, frame.size, self._classes, level_of, min_area=params.min_area,
                            max_instances=params.max_instances, score_of=scores[level_of],
                            regions=params.region_cap())

    def _cluster(self, pixels: Pixels) -> tuple[npt.NDArray[np.int32], Pixels]:
        """(each pixel's cluster, the centres); the centres seed the next frame's clusters, which keep their ids."""
        params = self.params
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, params.iterations, params.epsilon)
        if self._centres is None:
            cv2.setRNGSeed(0)  # the same video gives the same clusters
            _, clusters, centres = cv2.kmeans(
                pixels, params.k, None, criteria, params.attempts, cv2.KMEANS_PP_CENTERS)  # type: ignore[call-overload,unused-ignore]
            order = np.lexsort(centres.T[::-1])  # by L, then a, then b
            clusters = np.argsort(order).astype(np.int32)[clusters]
            centres = centres[order]
        else:
            _, start = cv2.batchDistance(pixels, self._centres, cv2.CV_32F, normType=cv2.NORM_L2SQR, K=1)  # nearest
            _, clusters, centres = cv2.kmeans(pixels, params.k, start, criteria, 1, cv2.KMEANS_USE_INITIAL_LABELS)
        found: Pixels = np.asarray(centres, dtype=np.float32)
        self._centres = found
        return np.asarray(clusters, dtype=np.int32).ravel(), found


def separation(pixels: Pixels, clusters: npt.NDArray[np.int32], centres: Pixels) -> npt.NDArray[np.float32]:
    """Per-cluster score: 1 - mean distance to the own centre / half the distance to the nearest other, in 0..1."""
    k = len(centres)
    offsets = pixels - centres[clusters]
    spread = np.sqrt(np.einsum("ij,ij->i", offsets, offsets))
    mean_spread = np.bincount(clusters, weights=spread, minlength=k) / np.maximum(np.bincount(clusters, minlength=k), 1)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2) + np.diag(np.full(k, np.inf))
    half_gap = gaps.min(axis=1) / 2
    ratio = np.divide(mean_spread, half_gap, out=np.ones(k), where=half_gap > 0)
    return np.clip(1 - ratio, 0, 1).astype(np.float32)
