"""Evidence hotspots: where in a disc volume the evidence for a grade lies.

``saliency`` makes them (augmented GradientTape saliency, mapped back onto the
disc volume; the tf-keras-vis baselines), ``measure`` scores them (boxes, IoU
with lesion boxes, task specificity on lesion boxes or on labels), ``outputs``
writes them (PNG, npz, NIfTI in the scan's grid) and ``callback`` shows them in
TensorBoard. The names below are the package's API.

Example:
    model = build_model(width=0.125)
    hotspots = Hotspots(model)
    maps = hotspots("endplate_upper", volumes, augmentations=150, seed=0)
    maps.shape                                 # (n, 112, 224, 9), values in [0, 1]
"""

from spine_tf.hotspots.callback import HotspotImages
from spine_tf.hotspots.measure import (LABEL_GROUPS, LOCALISATION_JSON, LOCALISATION_MARKDOWN,
                                       PERCENTILE, PERCENTILES, WHOLE_VOLUME, hotspot_boxes,
                                       label_specificity, localisation, localisation_markdown,
                                       sided_pairs, task_specificity, upper_fraction, volume_iou)
from spine_tf.hotspots.outputs import (overlay_pictures, save_outputs, save_scan_hotspots,
                                       scan_hotspots, to_scan)
from spine_tf.hotspots.saliency import (AUGMENTATIONS, CHUNK, Hotspots, TaskHotspots,
                                        UnknownTaskError, graph_hotspots, hotspot_ranges,
                                        plain_saliency, smoothgrad, summed_maps)

__all__ = ["AUGMENTATIONS", "CHUNK", "LABEL_GROUPS", "LOCALISATION_JSON", "LOCALISATION_MARKDOWN",
           "PERCENTILE", "PERCENTILES", "WHOLE_VOLUME", "HotspotImages", "Hotspots",
           "TaskHotspots", "UnknownTaskError", "hotspot_ranges",
           "graph_hotspots", "hotspot_boxes", "label_specificity", "localisation",
           "localisation_markdown", "overlay_pictures", "plain_saliency", "save_outputs",
           "save_scan_hotspots", "scan_hotspots", "sided_pairs", "smoothgrad", "summed_maps",
           "task_specificity", "to_scan", "upper_fraction", "volume_iou"]
