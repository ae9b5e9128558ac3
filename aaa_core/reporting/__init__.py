"""Reporting: paired verdicts and formatting (``verdicts``), the paper's tables and figures
(``tables``), each dataset's summary (``summary``) and the verdicts over training seeds (``seeds``).
"""
