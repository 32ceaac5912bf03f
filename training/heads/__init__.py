"""Extra discriminator heads: objects that add loss terms to the D and G steps.

See training/loss.py (the protocol: `d_loss`, `g_loss`) and training/training_loop.py
(optimizers, `end_step`, training state, network pickles). Heads here:

- `insgen`: InsGen's real- and fake-instance contrastive heads (Yang et al. 2021, "Data-
  Efficient Instance Generation from Instance Discrimination").
"""
