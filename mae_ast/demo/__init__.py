"""The demo behind ``tools/demo.py``: pretrain a small MAE-AST on real recordings and report.

* ``packages``: the Debian packages that ship the built-in corpus's audio, and what each file is;
* ``corpus``: cutting that audio into a balanced set of 16 kHz flac chunks listed in ``index.tsv``;
* ``train``: manifests and the ``fairseq-hydra-train`` run, CPU or GPU model size;
* ``probe``: linear probes of the encoder's layers against a random init and plain log-mel;
* ``report``: loss curves, reconstructions and ``report.json``;  ``html``: its ``index.html``;
* ``pipeline``: the four steps in order, each reused when it is already done;
* ``console``: the progress lines every step prints.
"""
