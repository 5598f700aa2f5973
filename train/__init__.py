"""Fine-tuning BLIP with its own objectives (ITC, ITM, LM), sized to run on a CPU.

Installed as `blipsearch.train`. `losses` holds the objectives as pure tensor functions,
`loop` the shared training loop (checkpoints, exact resume, schedule), `retrieval` and
`captioner` the two trainers that the `blipsearch train` commands run.
"""
