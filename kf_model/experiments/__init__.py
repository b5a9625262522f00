"""The paper's two other claims, as recorded experiments: transfer of the CKN, and disentanglement.

    python train/experiments.py transfer --dataset dsprites --quick --output runs/experiments
    python train/experiments.py disentanglement --quick --output runs/experiments
    python train/experiments.py sweep --quick --output runs/experiments      # kf_model.experiments.sweep

Both write JSON (``transfer-<dataset>.json``, ``disentanglement-dsprites.json``) next to the networks they
trained; ``kf_model.evaluation.plots``-style figures and the README tables are made from those files only.

**Transfer.** Factorize a teacher of some tasks only (dSprites: shape, scale, orientation; Fashion-MNIST: the
first 7 classes), then learn each held-out task (pos_x, pos_y; the last 3 classes) from 1 %, 10 % and 100 % of
a training pool's labels, with:

- ``kf_tsn``: a new TSN on the frozen CKN (what ``train/add_task.py`` does, CE + aux CE + InfoMin);
- ``teacher_tsn``: the same TSN on the frozen trunk of the teacher (its pooled last stage);
- ``ckn_probe``: a linear probe on the frozen CKN feature z_c;
- ``scratch``: the same network as ``kf_tsn`` (CKN architecture + TSN), every weight trained from scratch;
- ``ceiling``: that task's factor in a factorization that included it (teacher and CKN saw its labels).

Each (task, fraction, method) runs for several seeds (label subset and initialisation); the JSON keeps every
seed's accuracy, the mean and the standard deviation.

**Disentanglement** on dSprites (5 factors), with ``kf_model.experiments.disentanglement`` (disentanglement_lib's
metrics): teacher features, KD-student features, CKN features, the concatenated TSN features, and the
concatenated TSN features of a factorization whose TSNs end in 2 channels each (a 10-d latent, the width of
the reference's dSprites configs).

``--quick`` networks and budgets fit a shared CPU in minutes: the smoke test of the commands, its numbers
small-scale and saying so in the JSON (``scale``). ``--scale full`` uses the recipes' ``train/configs``.

One module a job: ``stages`` (settings, sizes, the training stages), ``transfer``, ``representations`` (the
disentanglement experiment), ``disentanglement`` (disentanglement_lib's metrics), ``sweep``, ``reports``
(tables and figures) and ``cli`` (the command line of ``train/experiments.py``). The full-scale experiments
are resumable (``--scale``): ``runs`` (result files), ``plans`` (training stages as runs), ``transfer_job``
(a transfer run as a ``fit`` job), ``claims`` (each experiment's runs and assembled JSON), ``full_reports`` and
``probe`` (cost).
"""
