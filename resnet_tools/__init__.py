"""The modules beside resnet_lib, one concern per module, on two floors (tests/test_floors.py).

Leaves, below resnet_lib (they never import it):
    errors       the exceptions more than one floor raises (ConfigError, DataError, RanksDisagree)
    budget       the parameter budget: count_params, check_budget
    dataset      CIFAR-10 in memory: CLASSES, the CIFAR10 container, channel_stats
    safeio       allow-list unpickler, md5 sums, atomic writes, writable checks
    devices      device names, bf16 autocast, the CPU allocator setting
    progress     the progress bar
    runlog       per-epoch logs: history.csv and TensorBoard event files beside results.json
    cifarfiles   the official batch files, their md5 sums, the download
    imagefolder  image-folder datasets (train/<class>/*.png|jpg, test/<class>/*), decoded once and cached
    checkpoints  the checkpoint format fit writes, its safe loader and checks
    step, distill, cudagraph   one optimization step, the distillation loss, the step as a CUDA graph
    distributed  data-parallel training under torchrun
    notebook     the notebooks' parameters: from the environment, checked by their annotations; the
                 repository's folder and Colab for their first cell (it imports this before resnet_lib)
Tools, above resnet_lib (they use it):
    job          train_and_evaluate: data, model, fit, evaluation, results.json
    inference    models rebuilt from checkpoints, predict, submission files, safetensors
    results      run names, data labels, loading results, the best run, tables
    figures      one figure style and every plot
    explain      calibration (temperature scaling, ECE, reliability diagrams) and Grad-CAM maps
    record       which runs the record holds and where a notebook writes
    cli          `python resnet_lib.py train | predict | export ...`
    report/      the paper's and the README's results (facts, words, paper, readme; latex and markdown
                 are text-only leaves)

Notebooks and scripts import what they use from where it lives: `from resnet_tools import figures`.
"""
