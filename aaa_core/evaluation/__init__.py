"""Evaluation of a defended pipeline: per-example flags under PGD (``flags``, ``sharded`` over
processes), the paper's protocol (``protocols``), the adaptive-attack suite (``suite``), AutoAttack
(``autoattack``), kNN latent reconstruction (``knn``), randomized-smoothing certification (``certify``) and
the sanity checks every evaluation must pass (``checks``).
"""
