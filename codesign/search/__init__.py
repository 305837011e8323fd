"""Joint search over architecture, pruning ratios and per-layer TVM schedules.

``encoding`` (genome vectors), ``problem`` (scoring under budgets), ``accuracy_predictor``,
``costs``, ``pareto``, ``strategies/`` (one file per strategy), ``runner`` (generations,
archive, checkpoints) and ``report`` (finalists, results, plot).
"""
