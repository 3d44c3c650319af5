"""Training: the generic Trainer, DDP helpers and the runner of a model's adapter pretraining
stage (the stage itself is the model's: ``ModelSpec.adapter_stage``)."""
