"""Training: the one training loop (:mod:`.trainer`) with the student's (:mod:`.train_student`,
``lyra train``) and the video VAE's (:mod:`.train_vae`, ``lyra train-vae``) tasks, losses,
schedules, run folders (:mod:`.checkpoints`), settings files (:mod:`.config`), the chain of runs
a student continues (:mod:`.lineage`) and ``lyra export`` (:mod:`.export`)."""
