"""Training: config schema, dataset preparation and loading, σ sampler, loss, the accelerate loop, checkpoints.

Pipeline: ``prepare.py`` (videos → dataset) → ``dataset.py`` (check, sample clips, batch plan) → ``step.py``
(conditioning, noise, dropout, loss via ``noise.py`` and ``loss.py``) → ``trainer.py`` (accelerate loop) →
``checkpoint.py`` (released-format .pth + accelerate state) and ``validation.py`` (video via the sampler).
"""
