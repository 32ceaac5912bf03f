"""Quality metrics of generators: FID, KID, precision/recall, IS and PPL.

`metric_main` holds the registry and the entry points (`calc_metric`, `report_metric`);
`metric_utils` the shared feature machinery; `detectors` the feature networks.
"""
