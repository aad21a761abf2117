"""Training machinery shared by pre-training and phase recognition: state, optimisers, steps,
checkpoints, metric logging and pictures."""
