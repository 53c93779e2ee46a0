"""Training: fold splits, patch sampling, augmentation, Dice+CE loss, schedules, checkpoints,
logging, DDP helpers and the short trainer that composes them (``medmamba train``).

Submodules are imported explicitly (``from medmamba.training.trainer import train``); this
package imports nothing at import time so ``import medmamba.training`` stays cheap.
"""
