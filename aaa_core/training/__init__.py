"""Training: the AE objectives (``losses``), the training loops of classifiers, Madry and AAA
(``loops``), and training through a classifier that can only be queried (``query_only``).
"""
