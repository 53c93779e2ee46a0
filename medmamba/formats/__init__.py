"""Every file contract between stages, in one place (docs/internals.md).

Each module holds one file's shape and its one reader (and writer): ``json_io`` (the JSON reader
every stage uses), ``constants``, ``plans``, ``fingerprint``, ``checkpoint``,
``preprocessed_case``, ``splits``, ``summary``, ``probabilities``, ``written_files`` (the record of
the files medmamba wrote into an output folder). This package imports only ``medmamba.errors``,
``medmamba.atomic``, numpy and (for checkpoints) torch, so any stage may read another stage's
output without importing that stage's code.
"""
