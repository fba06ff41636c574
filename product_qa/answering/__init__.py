"""The answering systems (any model, base or fine-tuned): generation, retrieval, the systems, metrics and the
evaluation. Works on the data stage and the shared modules; the training stage uses it to measure its run."""
