"""The application layer: run-time policy and jobs, shared by `cli/` and `tui/`.

* `backbones`: which backbone, on which device, at which precision and with how many
  CPU threads (`open_backbone(purpose)`; one rule for `auto`), and the noise warning.
* `plugins`: finding the installed modality plugins (`load_plugins()`).
* `training`: the training job (`train_concept_job`), the one door both the command
  line and the chat app use.

This layer never prints and knows no widget: it reports through callbacks and
returned notes, and the front ends (`cli/`, `tui/`) show them. The `YOC_*`
environment is read by `yoc_assistant.settings` only; the policy built on it is here.
"""
