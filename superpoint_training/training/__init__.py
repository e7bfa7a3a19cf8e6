"""Training: the trainer, MagicPoint and SuperPoint tasks, losses, homographic adaptation, detector metrics."""
