"""Helpers beside resnet_lib, one concern per module.

    safeio       allow-list unpickler, md5 sums, atomic writes, writable checks
    imagefolder  image-folder datasets (train/<class>/*.png|jpg, test/<class>/*), decoded once and cached
    runlog       per-epoch logs: history.csv and TensorBoard event files beside results.json
    inference    predict, submission files, safetensors export and loading
    results      run names, data labels, loading results, the best run, tables
    figures      one figure style and every plot
    explain      calibration (temperature scaling, ECE, reliability diagrams) and Grad-CAM maps
    cli          `python resnet_lib.py train | predict | export ...`

The notebooks reach the names they use through resnet_lib (`rl.plot_confusion_matrix`).
"""
