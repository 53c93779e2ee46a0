"""How a dataset.json ``labels`` dict maps to network outputs: label mode or region mode.

The one place that decides the number of network outputs, the nonlinearity and what each output
means; the planner, training, inference, ensembling and evaluation all ask it (the rules of nnU-Net's
LabelManager, nnunetv2/utilities/label_handling/label_handling.py):

- **Region mode** iff some ``labels`` value (other than ``ignore``) is a list of more than one
  integer (nnU-Net's rule: ``[3]`` alone does not switch it on). Each non-background entry is a
  region, the union of its label values, in ``labels`` key order (scalars are regions of one
  value). The network has one output per region (no background output), sigmoid per output;
  ``regions_class_order`` (one label value per region) says what to paint where output ``i``
  exceeds 0.5, later regions overwriting earlier ones, so encompassing regions come first.
- **Label mode** otherwise: one softmax output per label value (background included), ``ignore``
  excluded; output ``k`` is the ``k``-th smallest value.

Label files hold plain integer labels in both modes; regions are derived from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from medmamba.errors import DatasetError

IGNORE_KEY = "ignore"  # nnU-Net's name of the ignore label; never an output


def _members(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(int(v) for v in values)


def ignore_label_value(labels: Mapping[str, Any]) -> int | None:
    """``labels["ignore"]`` as an int, or None when the dataset declares none (or declares it as a list,
    which verify reports)."""
    value = labels.get(IGNORE_KEY)
    return None if value is None or isinstance(value, (list, tuple)) else int(value)


def is_region_based(labels: Mapping[str, Any]) -> bool:
    """nnU-Net's switch: some non-ignore value is a list of more than one label value."""
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for k, v in labels.items() if k != IGNORE_KEY)


def foreground_regions(labels: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, member values)`` of every region in key order: background, ``ignore`` and entries
    made only of 0 are left out (region mode only makes sense of them)."""
    return [(k, _members(v)) for k, v in labels.items()
            if k not in ("background", IGNORE_KEY) and any(m != 0 for m in _members(v))]


def all_label_values(labels: Mapping[str, Any]) -> list[int]:
    """Every integer a label file may hold apart from ``ignore``: scalars and region members, sorted."""
    return sorted({m for k, v in labels.items() if k != IGNORE_KEY for m in _members(v)})


def foreground_labels(labels: Mapping[str, Any]) -> list[int]:
    """Every non-zero label value a label file may hold (region members included, ``ignore`` not): the
    foreground the patch sampler oversamples, and the cascade's one input channel per value
    (nnU-Net's ``foreground_labels``)."""
    return [v for v in all_label_values(labels) if v > 0]


def num_network_outputs(labels: Mapping[str, Any]) -> int:
    """Output channels of the network: one per foreground region (region mode), else one per
    label value including background."""
    if is_region_based(labels):
        return len(foreground_regions(labels))
    return len(all_label_values(labels))


def region_problems(labels: Mapping[str, Any], regions_class_order: Any) -> list[str]:
    """Problems of a region-based ``labels`` + ``regions_class_order`` declaration, one sentence each
    (empty when fine or when ``labels`` is not region-based). ``regions_class_order`` None = absent."""
    if not is_region_based(labels):
        return []
    problems = []
    regions = foreground_regions(labels)
    values = all_label_values(labels)
    if values != list(range(len(values))):
        problems.append(f"label values (region members included) must be consecutive integers "
                        f"0..{len(values) - 1}, got {values} (remap the label files and dataset.json)")
    for name, members in regions:
        if 0 in members:
            problems.append(f"region {name!r} {list(members)} includes background 0; a region is a union of "
                            "foreground label values")
        if len(set(members)) != len(members):
            problems.append(f"region {name!r} lists a label value twice: {list(members)}")
    if regions_class_order is None:
        problems.append("region-based labels (lists) need 'regions_class_order': the label value painted for "
                        f"each of the {len(regions)} regions, encompassing regions first (BraTS: [1, 2, 3])")
        return problems
    if (not isinstance(regions_class_order, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in regions_class_order)):
        problems.append(f"'regions_class_order' must be a list of integer label values, got {regions_class_order!r}")
        return problems
    if len(regions_class_order) != len(regions):
        problems.append(f"'regions_class_order' has {len(regions_class_order)} entries but 'labels' declares "
                        f"{len(regions)} regions ({', '.join(n for n, _ in regions)}); give one label value per region")
        return problems
    for i, ((name, members), value) in enumerate(zip(regions, regions_class_order)):
        if value not in members:
            problems.append(f"regions_class_order[{i}] = {value} is not a label value of region {name!r} "
                            f"{list(members)}: painting it there would contradict the region")
    return problems


@dataclass(frozen=True)
class LabelLayout:
    """What the network's outputs mean (see the module docstring).

    ``label_values``: label-mode outputs in order (background first); ``regions``/``region_names``/
    ``regions_class_order``: region mode (empty in label mode).
    """

    label_values: tuple[int, ...]
    regions: tuple[tuple[int, ...], ...] = ()
    region_names: tuple[str, ...] = ()
    regions_class_order: tuple[int, ...] = ()
    # which regions dataset.json declares as a list (scored as a tuple, summary key "(2,)") rather than as
    # a scalar (scored as an int, key "2"): nnU-Net's LabelManager turns lists into tuples and keys are str()
    region_is_list: tuple[bool, ...] = ()

    @property
    def has_regions(self) -> bool:
        return bool(self.regions)

    @property
    def num_outputs(self) -> int:
        return len(self.regions) if self.has_regions else len(self.label_values)

    @property
    def foreground_values(self) -> list[int]:
        """Every non-zero label value a label file may hold (region members included): the foreground
        the patch sampler oversamples (in region mode the union of the regions)."""
        return [v for v in self.label_values if v > 0]

    @property
    def evaluation_labels(self) -> list[int | tuple[int, ...]]:
        """What is scored: each region (a tuple when dataset.json declares it as a list, even of one value,
        else its int: nnU-Net's summary keys ``"(2,)"`` and ``"2"``), else each foreground label value."""
        if self.has_regions:
            listed = self.region_is_list or (True,) * len(self.regions)
            return [tuple(r) if is_list or len(r) > 1 else r[0] for r, is_list in zip(self.regions, listed)]
        return [v for v in self.label_values if v > 0]

    @property
    def output_names(self) -> list[str]:
        """A name per foreground output: the region names, else the label values' names."""
        return list(self.region_names) if self.has_regions else [str(v) for v in self.label_values if v > 0]


def layout_from_labels(labels: Mapping[str, Any], regions_class_order: Sequence[int] | None = None,
                       path: Any = None) -> LabelLayout:
    """The layout of a ``labels`` dict (+ dataset.json's ``regions_class_order`` in region mode);
    a bad region declaration is a :class:`DatasetError` naming ``path``."""
    if not is_region_based(labels):
        return LabelLayout(tuple(all_label_values(labels)))
    order = list(regions_class_order) if isinstance(regions_class_order, tuple) else regions_class_order
    problems = region_problems(labels, order)
    if problems:
        raise DatasetError(problems[0], path=path)
    regions = foreground_regions(labels)
    return LabelLayout(tuple(all_label_values(labels)), tuple(m for _, m in regions), tuple(n for n, _ in regions),
                       tuple(int(v) for v in order or ()),
                       tuple(isinstance(labels[n], (list, tuple)) for n, _ in regions))
