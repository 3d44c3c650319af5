"""Training: the generic Trainer, DDP helpers and stage logic (ConKI adapter pretraining)."""
