"""Batch jobs: many files, cut into segments, run on this machine or a Ray cluster, resumable.

Layered above the single-run pipeline: :mod:`batch.inputs` (what to do), :mod:`batch.segments`
(where to cut), :mod:`batch.piece` (one unit of work), :mod:`batch.executors` (where units run),
:mod:`batch.join` (pieces into an output), :mod:`batch.state` (what is done), :mod:`batch.job`
(the job) and :mod:`batch.cli` (``colorize batch``).
"""
