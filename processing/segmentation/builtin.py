"""The builtin segmenter: MNI priors, lesion filling, EM on T1 intensity, partial-volume fractions.

Chosen because it runs offline in ~15 s on two cores with what the node already ships (SimpleITK,
scipy, the MNI152 maps inside nilearn), needs no trained model, and gives partial-volume fractions
(what the PSF-scaled masks need) rather than hard labels:

1. priors: the MNI T1 template registered affinely to the subject's T1 (``prior_registration``);
   grey, white, intracranial and deep-grey priors warped with it;
2. lesion filling: T2-lesion voxels (dilated 1 mm) get the normal-appearing WM intensity (the
   median T1 of confident WM away from lesions), as the paper fills lesions before segmenting
   (there patch-based; here a constant, which is what a 3-class intensity model needs);
3. EM: a Gaussian per class (CSF, GM, WM) over the intracranial mask, each voxel's class prior the
   warped template mixed with ``PRIOR_UNIFORM_SHARE`` of a flat prior (the affine fit is not exact);
   a smooth multiplicative bias field (2nd-order polynomial of position, fitted to confident
   voxels) is removed between EM rounds;
4. pure-tissue levels: EM's class means are pulled towards each other by the many mixed voxels
   of a 1 mm brain, so the levels come from a partial-volume model of the histogram
   (``pve_levels``);
5. fractions: each voxel's intensity unmixed into CSF, GM and WM with the registered atlas as a
   Gaussian prior (``unmixing``): the intensity decides what it can see, the atlas the
   three-tissue mixtures a single T1 intensity cannot tell from pure grey matter; not clipped,
   so noise averages out instead of biasing pure tissue towards a mixture. Where the EM is
   confident a voxel is CSF (posterior > ``CONFIDENT_POSTERIOR``), its posterior replaces the
   atlas as the prior: a T1 that dark is CSF whatever the template says, and the template is that
   of a brain without atrophy. With the atlas there, a pure-CSF voxel where the template has white
   matter was unmixed into ~0.6 CSF and the rest grey and (negative) white matter along the one
   direction the T1 cannot see, so enlarged ventricles and widened sulci lost their CSF to the
   cortex (13 subjects of the independent anatomy: CSF -50 ml, CGM TSC -2.9 mM bias, fitted CSF
   ~170 mM; with the posterior prior +7 ml, +1.1 mM, 136 mM; ``docs/processing.md``). Voxels the
   EM calls grey or white matter keep the atlas prior: at a ventricle's wall a CSF/white-matter
   mixture reads as grey matter on the T1, and there the template's white matter is right;
6. deep grey matter: all the parenchyma (grey and white fractions) inside the warped deep-grey
   regions, as an anatomical label of a nucleus holds the whole nucleus: on T1 the thalamus and
   pallidum are part way between grey and white matter (myelinated fibres run through them), so
   the unmixing calls a share of every nucleus "white", and counting only its grey share gave half
   the deep grey volume and its TSC pulled towards the white matter's. The regions are sized to
   the nuclei and stop short of the internal capsule (``mni_priors``). The rest of the grey matter
   is cortical (and cerebellar) grey matter. (``atlas_deep_grey.split_deep_grey``, also used for
   external maps without a deep-grey class.)
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from processing.segmentation.atlas_deep_grey import split_deep_grey
from processing.segmentation.mni_priors import load_mni_priors
from processing.segmentation.prior_registration import as_array, register_priors
from processing.segmentation.pve_levels import pure_tissue_levels
from processing.segmentation.tissue_maps import TissueMaps
from processing.segmentation.unmixing import unmix
from processing.volume import Scaling, Volume
from sodium_node.errors import SegmentationError

log = logging.getLogger(__name__)

PRIOR_UNIFORM_SHARE = 0.2
EM_ROUNDS = 3
EM_ITERATIONS = 8
CONFIDENT_POSTERIOR = 0.9
MIN_CLASS_SEPARATION_SD = 1.5
"""Class means must be ordered CSF < GM < WM, adjacent ones this many SDs apart, or the image is not
a T1-weighted brain."""
INTRACRANIAL_THRESHOLD = 0.5
MIN_INTERIOR_VOXELS = 1000
OUTER_CSF_SEARCH_MM = 5.0


def _polynomial_terms(ijk: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    x, y, z = (ijk[:, axis] / shape[axis] - 0.5 for axis in range(3))
    return np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)


def _em(
    intensity: np.ndarray, prior: np.ndarray, means: np.ndarray, sds: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Gaussian mixture with spatial priors; returns posteriors [n, 3], means, sds."""
    posterior = prior
    for _ in range(EM_ITERATIONS):
        likelihood = np.exp(-0.5 * ((intensity[:, None] - means) / sds) ** 2) / sds
        joint = prior * likelihood + 1e-30
        posterior = joint / joint.sum(axis=1, keepdims=True)
        weight = posterior.sum(axis=0)
        means = (posterior * intensity[:, None]).sum(axis=0) / weight
        sds = np.sqrt((posterior * (intensity[:, None] - means) ** 2).sum(axis=0) / weight) + 1e-6
    return posterior, means, sds


def _outer_csf(
    t2_on_t1: np.ndarray, intracranial: np.ndarray, csf: np.ndarray, voxel_size_mm: np.ndarray
) -> np.ndarray:
    """CSF fraction just outside the template's intracranial mask, from the T2-weighted echo.

    On a T1 image the outer CSF and the skull are both dark, so the affinely registered template's
    boundary decides alone and misses a rim of subarachnoid CSF (~50 ml in simulations), whose
    140 mM the partial-volume correction would then give to the cortex. On T2, CSF is the brightest
    thing in the head and bone the darkest: within ``OUTER_CSF_SEARCH_MM`` of the mask (short of the
    scalp, whose fat is T2-bright too), each voxel's fraction is its T2 signal between the bone
    level and the CSF level (the median of confidently-CSF voxels inside)."""
    distance_mm = ndimage.distance_transform_edt(~intracranial, sampling=voxel_size_mm)
    ring = (distance_mm > 0) & (distance_mm <= OUTER_CSF_SEARCH_MM)
    inside_csf = intracranial & (csf > CONFIDENT_POSTERIOR)
    if np.count_nonzero(inside_csf) < MIN_INTERIOR_VOXELS or not np.any(ring):
        return np.zeros(intracranial.shape, dtype=np.float32)
    csf_level = float(np.median(t2_on_t1[inside_csf]))
    bone = t2_on_t1[ring]
    bone_level = float(np.percentile(bone, 10))
    noise = float(np.median(np.abs(bone - np.median(bone[bone <= np.percentile(bone, 50)]))))
    floor = bone_level + 3.0 * 1.4826 * noise
    if csf_level <= floor:
        return np.zeros(intracranial.shape, dtype=np.float32)
    fraction = np.zeros(intracranial.shape, dtype=np.float32)
    fraction[ring] = np.clip((t2_on_t1[ring] - floor) / (csf_level - floor), 0.0, 1.0)
    return fraction


def segment_builtin(
    t1: Volume, *, t2_lesions: Volume | None, t2_on_t1: Volume | None = None, t1_name: str = "3D T1"
) -> TissueMaps:
    priors = register_priors(t1, load_mni_priors(), t1_name=t1_name)
    grey_prior, white_prior = as_array(priors.grey), as_array(priors.white)
    intracranial = as_array(priors.intracranial) >= INTRACRANIAL_THRESHOLD
    csf_prior = np.clip(as_array(priors.intracranial) - grey_prior - white_prior, 0.0, 1.0)
    image = np.asarray(t1.data, dtype=np.float64).copy()
    lesion = np.zeros(t1.shape, dtype=bool)
    if t2_lesions is not None:
        lesion = ndimage.binary_dilation(np.asarray(t2_lesions.data) > 0.5)
        confident_wm = intracranial & (white_prior > CONFIDENT_POSTERIOR) & ~lesion
        if np.any(lesion) and np.any(confident_wm):
            image[lesion] = float(np.median(image[confident_wm]))
    ijk = np.argwhere(intracranial)
    intensity = image[intracranial]
    flat = 1.0 / 3.0
    prior = np.stack([csf_prior[intracranial], grey_prior[intracranial], white_prior[intracranial]], axis=1)
    prior = (1 - PRIOR_UNIFORM_SHARE) * prior / np.maximum(prior.sum(axis=1, keepdims=True), 1e-6)
    prior += PRIOR_UNIFORM_SHARE * flat
    quantiles = np.percentile(intensity, [10, 50, 90])
    means, sds = quantiles.astype(np.float64), np.full(3, (quantiles[2] - quantiles[0]) / 6 + 1e-6)
    terms = _polynomial_terms(ijk, t1.shape)
    bias = np.ones_like(intensity)
    posterior = prior
    for _ in range(EM_ROUNDS):
        posterior, means, sds = _em(intensity / bias, prior, means, sds)
        confident = posterior.max(axis=1) > CONFIDENT_POSTERIOR
        labels = posterior.argmax(axis=1)
        keep = confident & (labels > 0)
        ratio = np.log(np.maximum(intensity[keep], 1e-6) / means[labels[keep]])
        coefficients, *_ = np.linalg.lstsq(terms[keep], ratio, rcond=None)
        bias = np.exp(terms @ coefficients)
    corrected = intensity / bias
    if not (means[0] < means[1] < means[2]) or np.any(
        np.diff(means) < MIN_CLASS_SEPARATION_SD * np.maximum(sds[:-1], sds[1:])
    ):
        raise SegmentationError(
            f"{t1_name}: intensity classes are not those of a T1-weighted brain (CSF < GM < WM; means "
            f"{np.round(means, 4).tolist()}, SDs {np.round(sds, 4).tolist()})"
        )
    means = pure_tissue_levels(corrected, means)
    log.info("%s: pure-tissue levels CSF %.4g, GM %.4g, WM %.4g", t1_name, *means)
    expected = np.stack([csf_prior[intracranial], grey_prior[intracranial], white_prior[intracranial]])
    expected /= np.maximum(expected.sum(axis=0, keepdims=True), 1e-6)
    confident_csf = posterior[:, 0] > CONFIDENT_POSTERIOR
    expected[:, confident_csf] = posterior[confident_csf].T
    fractions = unmix(corrected[None, :], means[None, :], expected, noise_sd=np.array([np.median(sds)]))
    maps = []
    for index in range(3):
        full = np.zeros(t1.shape, dtype=np.float32)
        full[intracranial] = fractions[index]
        maps.append(full)
    csf, grey, white = maps
    if t2_on_t1 is not None:
        outer = _outer_csf(np.asarray(t2_on_t1.data), intracranial, csf, np.asarray(t1.voxel_size_mm))
        log.info(
            "%s: %.1f ml of CSF outside the template's intracranial mask (from T2)",
            t1_name,
            float(outer.sum()) * float(np.prod(t1.voxel_size_mm)) / 1000.0,
        )
        csf = csf + outer
    grey, deep, white = split_deep_grey(grey, white, as_array(priors.deep_grey_region))

    def volume(data: np.ndarray) -> Volume:
        return t1.with_data(data, scaling=Scaling.DERIVED, unit="fraction").with_space("t1")

    return TissueMaps(
        grey=volume(grey), deep_grey=volume(deep), white=volume(white), csf=volume(csf), source="builtin"
    )
