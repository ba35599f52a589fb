"""Training: supervised (:mod:`.supervised`), FixMatch (:mod:`.fixmatch`), staged fine-tuning
(:mod:`.finetune`), self-supervised pretraining (:mod:`.pretrain`, :mod:`.simclr`, :mod:`.vae`), the linear
probe (:mod:`.probe`), frozen encoders with scikit-learn heads (:mod:`.frozen`) and the seed models (:mod:`.seeds`)."""
