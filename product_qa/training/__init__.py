"""Stage 3, the fine-tuning: model loading for training, the trainer parts and the workflow of a run."""
