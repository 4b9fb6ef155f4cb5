"""Search fine-tuning recipes: Optuna samples the searched config values, each trial is an ordinary finetune.py
run in <ckpt_save_dir>/trial_NNN, and the best recipe is written as best.yaml.

    python sweep.py --config x.yaml --search lr=log:1e-4:1e-1 strategy=linear_probe,lp_ft,full \\
        label_smoothing=0:0.2 --trials 20 --ckpt_save_dir ckpt/sweep
    python finetune.py --config ckpt/sweep/best.yaml

The same command run again goes on where the sweep stopped; copies of it with one --storage share its trials
(docs/sweep.md). The pipeline: check_sweep (parse_space; the data, each searched value and their combinations
resolved) → run_search (open_study, then per trial: load_config with its values → finetune.run, one FeatureMemo
shared by the trials) → sweep.csv, sweep.png, best.yaml.
"""

import sys

from tunecv.scripts.sweep import main

if __name__ == "__main__":
    sys.exit(main())
