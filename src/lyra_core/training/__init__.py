"""Training: losses, schedules, run folders, the training loops of the VAE and the student."""
