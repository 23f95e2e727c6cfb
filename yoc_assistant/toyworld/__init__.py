"""The toy world and the small pretrained backbone shipped with yoc (docs/toyworld.md).

Scripts: `python -m yoc_assistant.toyworld.<train_vq | train_backbone | train_clip |
make_concept | measure | ablation>`; shipped weights in `weights/backbone` (an ordinary
HF Chameleon directory) and `weights/clip` (open_clip local-dir layout).
"""
