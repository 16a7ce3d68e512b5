"""Names the probes package accepts, importable without torch (the CLI's parser reads them)."""

PLANT_KINDS = ("valence", "random")  # probes.plant: a positive control (a valence axis) and a negative one (an axis, not valence)
DESIGNS = ("independent", "paired")  # probes.extract: trajectories drawn per class, or one gold- and one mold-final per maze state
