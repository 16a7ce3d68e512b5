"""Mechanics of the trained update: how RL changes the model, measured on pairs of models.

Data flows envs -> training -> probes -> steering -> mechanics -> welfare_axis. Each module is
one measurement; the statistics are small pure functions (tested on hand-computed values) and
the model-level functions only gather what those functions read:

* `stats`: KL between next-token distributions, bootstrap CIs of means and ratios of means.
* `examples`: the token sequences and read positions of the on-target (maze) and off-target sets.
* `drift`: KL(start || trained) per example on each set, and the off/on-target ratio.
* `gating`: MLP gradient mass on units whose gate was closed, against their share of units.
* `onestep`: one RL and one SFT update from the same model, scaled to the same on-target change.
* `anatomy`: relative change, sparsity, effective rank and subspace rotation of each weight delta.
* `recruitment`: cos(v_*, u_*) per layer and linear CKA of naive vs trained representations.
* `claims`: hypotheses H1-H4 with thresholds stated in advance and the verdict rule.
"""
