"""Synthetic tasks: MQAR (zoology), S-NIAH (RULER's single-needle tasks) and the online-regression stream."""
